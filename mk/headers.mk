# make header-test: every public header compiles alone (C11 and C++11,
# -Werror) and reaches no libcurl header or type (tests/headers/run.sh).
# make install-test: make install into build/inst (PREFIX=/usr), then a
# program built with only the installed headers and `pkg-config civis`
# (shared and static) runs (tests/install/run.sh).
.PHONY: header-test install-test
PUBLIC_HEADERS := $(sort $(wildcard lib/include/civis/*.h))
INST_ROOT      := $(abspath $(BUILD)/inst)
CXX            ?= c++

header-test: $(STATICLIB)
	CC="$(CC)" CXX="$(CXX)" LINK_LIBS="$(LINK_LIBS)" \
	    sh tests/headers/run.sh $(BUILD)/header-test $(STATICLIB) $(PUBLIC_HEADERS)

install-test: all
	rm -rf $(INST_ROOT)
	$(MAKE) --no-print-directory install DESTDIR=$(INST_ROOT) PREFIX=/usr
	CC="$(CC)" sh tests/install/run.sh $(INST_ROOT) $(VERSION) $(BUILD)/install-test
