# make lint: cppcheck, clang-tidy (config in .clang-tidy), and the banned
# calls (curl's checksrc idea): sprintf, strcpy, strcat, atoi, gets, and
# strtol/strtoul/strtoull whose end pointer is not checked.
.PHONY: lint lint-banned lint-cppcheck lint-tidy
LINT_SRC := $(LIB_SRC) $(AGENT_SRC)

lint: lint-banned lint-cppcheck lint-tidy

lint-banned:
	@bash tests/lint/banned.sh $(LINT_SRC)

lint-cppcheck:
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,portability,performance \
	    --inline-suppr --suppress=missingIncludeSystem -D_GNU_SOURCE -DCIVIS_VERSION='"0"' \
	    -Ilib/include $(LINT_SRC)

lint-tidy:
	clang-tidy --quiet $(LINT_SRC) -- $(CPPFLAGS) $(PKG_CFLAGS) -std=c11 2>/dev/null
