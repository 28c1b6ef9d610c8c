# civis-agent: plain make, no generators.
#   make            build build/civis-agent, build/libcivis.{a,so}, build/civis.pc
#   make check      install missing deps, then every test suite (see README)
#   make demo       run the examples under the agent against the local simulator
#   make bench      the figures, side by side
#   make SAN=1 ...  the same build under ASan+UBSan, in build/san/
VERSION   := 0.1.0
SOVERSION := 0
PREFIX    ?= /usr/local
DESTDIR   ?=
CC        ?= cc

ifeq ($(SAN),1)
BUILD     ?= build/san
SANFLAGS  := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT       ?= -O1 -g
else
BUILD     ?= build
SANFLAGS  :=
OPT       ?= -O2 -g
endif

# libcurl and libarchive are compiled against but not linked into the agent
# or libcivis: lib/src/dl.c dlopen()s them on first use, so a run that makes
# no request and archives nothing does not map them and the ~45 libraries
# behind them (6-15 ms of loader time). cJSON and zlib are small: linked.
# PKG_LIBS (all four) is for programs that call libcurl themselves: unit
# tests, fuzz and torture targets.
PKGS      := libcurl libcjson libarchive zlib
LINK_PKGS := libcjson zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LINK_LIBS  := $(shell pkg-config --libs $(LINK_PKGS) 2>/dev/null) -ldl

WARN      := -std=c11 -Wall -Wextra -Wpedantic -Werror -Wshadow -Wstrict-prototypes \
             -Wmissing-prototypes -Wformat=2 -Wno-format-nonliteral
CPPFLAGS  += -D_GNU_SOURCE -DCIVIS_VERSION='"$(VERSION)"' -Ilib/include
CFLAGS    ?=
ALL_CFLAGS = $(WARN) $(OPT) $(SANFLAGS) $(PKG_CFLAGS) $(CFLAGS)
LDLIBS    += $(LINK_LIBS)

LIB_SRC   := $(sort $(wildcard lib/src/*.c))
AGENT_SRC := $(sort $(wildcard agent/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
AGENT_OBJ := $(AGENT_SRC:%.c=$(BUILD)/obj/%.o)
# Unit tests see internals through CIVIS_UNITTEST, so they get their own objects.
UT_LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/ut/%.o)
UT_AGENT_OBJ := $(filter-out $(BUILD)/ut/agent/main.o,$(AGENT_SRC:%.c=$(BUILD)/ut/%.o))
UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

AGENT     := $(BUILD)/civis-agent
STATICLIB := $(BUILD)/libcivis.a
SHAREDLIB := $(BUILD)/libcivis.so.$(VERSION)
PCFILE    := $(BUILD)/civis.pc

.PHONY: all agent lib deps check unit pid1 integration valgrind lint fuzz bench demo \
        install clean check-quick san-check
.DEFAULT_GOAL := all

all: agent lib
agent: $(AGENT)
lib: $(STATICLIB) $(SHAREDLIB) $(PCFILE)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -fPIC -MMD -MP -c -o $@ $<

$(BUILD)/ut/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DCIVIS_UNITTEST $(ALL_CFLAGS) -fPIC -MMD -MP -c -o $@ $<

$(AGENT): $(AGENT_OBJ) $(STATICLIB)
	$(CC) $(ALL_CFLAGS) -o $@ $(AGENT_OBJ) $(STATICLIB) $(LDFLAGS) $(LDLIBS)

$(STATICLIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SHAREDLIB): $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,libcivis.so.$(SOVERSION) -o $@ $^ $(LDFLAGS) $(LDLIBS)
	ln -sf libcivis.so.$(VERSION) $(BUILD)/libcivis.so.$(SOVERSION)
	ln -sf libcivis.so.$(VERSION) $(BUILD)/libcivis.so

$(PCFILE): lib/civis.pc.in Makefile
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@

$(BUILD)/tests/test_%: tests/unit/test_%.c $(UT_LIB_OBJ) $(UT_AGENT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DCIVIS_UNITTEST $(ALL_CFLAGS) -o $@ $< $(UT_AGENT_OBJ) $(UT_LIB_OBJ) \
	    $(LDFLAGS) $(LDLIBS) $(PKG_LIBS) -lcmocka

# ---------------------------------------------------------------- tests
unit: $(UNIT_BIN)
	@fail=0; for t in $(UNIT_BIN); do echo "== $$t"; $$t || fail=1; done; exit $$fail

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/civis
	install -m 755 $(AGENT) $(DESTDIR)$(PREFIX)/bin/civis-agent
	install -m 644 $(STATICLIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHAREDLIB) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libcivis.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libcivis.so.$(SOVERSION)
	ln -sf libcivis.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libcivis.so
	install -m 644 lib/include/civis/*.h $(DESTDIR)$(PREFIX)/include/civis/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' lib/civis.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/civis.pc

clean:
	rm -rf build

# Each concern keeps its targets in its own fragment: deps, pid1, integration,
# fuzz, lint, bench, demo, layer.
include $(sort $(wildcard mk/*.mk))

-include $(LIB_OBJ:.o=.d) $(AGENT_OBJ:.o=.d) $(UT_LIB_OBJ:.o=.d) $(UT_AGENT_OBJ:.o=.d)
