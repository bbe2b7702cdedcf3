# haproxy-connect: connect-spoa and connect-certsync.
#
#   make                      build both daemons into $(O) (default build/)
#   make SANITIZER=address,undefined test
#                             build into build/san and run every test with sanitizers
#   make test                 unit tests (cmocka), short fuzz runs, integration tests (pytest)
#   make unit | integration   one layer only
#   make fuzz                 build libFuzzer targets (clang); make fuzz-run FUZZ_SECONDS=N runs each
#   make install PREFIX=/usr/local DESTDIR=
#   make demo | bench
#
# Source lists live beside the sources: lib/sources.mk, spoa/sources.mk, certsync/sources.mk.

CC        ?= cc
FUZZ_CC   ?= clang
PREFIX    ?= /usr/local
DESTDIR   ?=
SANITIZER ?=
PYTHON    ?= /usr/bin/python3
FUZZ_SECONDS ?= 15

ifeq ($(SANITIZER),)
O ?= build
else
O ?= build/san
endif

PKGS := libcurl openssl jansson msgpack

WARN := -Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes \
        -Wcast-qual -Wformat=2 -Wno-unused-parameter
ifeq ($(CI),true)
WARN += -Werror
endif

OPT ?= -O2
CPPFLAGS += -D_GNU_SOURCE -Ilib -Ispoa -Icertsync
CFLAGS   += -std=c11 -g $(OPT) $(WARN) $(shell pkg-config --cflags $(PKGS))
LDLIBS   += $(shell pkg-config --libs $(PKGS)) -lev -lm
ifneq ($(SANITIZER),)
CFLAGS  += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZER)
endif

include lib/sources.mk
include spoa/sources.mk
include certsync/sources.mk

LIB_OBJS      := $(LIB_SRCS:%.c=$(O)/%.o)
SPOA_OBJS     := $(SPOA_SRCS:%.c=$(O)/%.o)
CERTSYNC_OBJS := $(CERTSYNC_SRCS:%.c=$(O)/%.o)

# Everything of a daemon but its main(), for unit tests and benches to link against.
SPOA_CORE     := $(filter-out $(O)/spoa/main.o,$(SPOA_OBJS))
CERTSYNC_CORE := $(filter-out $(O)/certsync/main.o,$(CERTSYNC_OBJS))

BINS := $(O)/connect-spoa $(O)/connect-certsync

.PHONY: all test unit integration fuzz fuzz-run install demo bench clean deps
# Keep object files that pattern rules build on the way (fuzz and bench objects).
.SECONDARY:
all: $(BINS)

# Rebuild everything when the compiler or its flags change (HAProxy's .build_opts).
BUILD_OPTS := $(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(LDLIBS)
$(shell mkdir -p $(O); echo '$(BUILD_OPTS)' | cmp -s - $(O)/.build_opts || echo '$(BUILD_OPTS)' > $(O)/.build_opts)

$(O)/%.o: %.c $(O)/.build_opts
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(O)/connect-spoa: $(SPOA_OBJS) $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/connect-certsync: $(CERTSYNC_OBJS) $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

-include $(shell find $(O) -name '*.d' 2>/dev/null)

# ---- unit tests: tests/unit/test_<area>_<name>.c, area lib|spoa|certsync decides what it links.
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(O)/tests/%)
$(O)/tests/test_lib_%: $(O)/tests/unit/test_lib_%.o $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka
$(O)/tests/test_spoa_%: $(O)/tests/unit/test_spoa_%.o $(SPOA_CORE) $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka
$(O)/tests/test_certsync_%: $(O)/tests/unit/test_certsync_%.o $(CERTSYNC_CORE) $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka
$(O)/tests/unit/%.o: CPPFLAGS += -Itests/unit -DTOP_SRCDIR=\"$(CURDIR)\"

# ---- benches: bench/<name>.c, linked with the spoa core.
BENCH_SRCS := $(sort $(wildcard bench/*.c))
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(O)/bench/%)
$(O)/bench/%: $(O)/bench/%.o $(SPOA_CORE) $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- fuzz targets: tests/fuzz/fuzz_<area>_<name>.c, libFuzzer + ASan/UBSan, built with clang in build/fuzz.
FUZZ_O    := build/fuzz
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_O)/%)
FUZZ_FLAGS := -std=c11 -g -O1 -fsanitize=fuzzer-no-link,address,undefined $(CPPFLAGS) $(shell pkg-config --cflags $(PKGS))
$(FUZZ_O)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -c -o $@ $<
FUZZ_LIB      := $(LIB_SRCS:%.c=$(FUZZ_O)/obj/%.o)
FUZZ_SPOA     := $(filter-out $(FUZZ_O)/obj/spoa/main.o,$(SPOA_SRCS:%.c=$(FUZZ_O)/obj/%.o))
FUZZ_CERTSYNC := $(filter-out $(FUZZ_O)/obj/certsync/main.o,$(CERTSYNC_SRCS:%.c=$(FUZZ_O)/obj/%.o))
FUZZ_LINK := -fsanitize=fuzzer,address,undefined $(shell pkg-config --libs $(PKGS)) -lev -lm
$(FUZZ_O)/fuzz_lib_%: $(FUZZ_O)/obj/tests/fuzz/fuzz_lib_%.o $(FUZZ_LIB)
	$(FUZZ_CC) -o $@ $^ $(FUZZ_LINK)
$(FUZZ_O)/fuzz_spoa_%: $(FUZZ_O)/obj/tests/fuzz/fuzz_spoa_%.o $(FUZZ_SPOA) $(FUZZ_LIB)
	$(FUZZ_CC) -o $@ $^ $(FUZZ_LINK)
$(FUZZ_O)/fuzz_certsync_%: $(FUZZ_O)/obj/tests/fuzz/fuzz_certsync_%.o $(FUZZ_CERTSYNC) $(FUZZ_LIB)
	$(FUZZ_CC) -o $@ $^ $(FUZZ_LINK)

fuzz: $(FUZZ_BINS)
fuzz-run: fuzz
	@for f in $(FUZZ_BINS); do \
	  n=$$(basename $$f); c=tests/fuzz/corpus/$${n#fuzz_}; mkdir -p build/fuzz/work/$$n; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 -artifact_prefix=build/fuzz/ \
	      build/fuzz/work/$$n $$( [ -d $$c ] && echo $$c ) >build/fuzz/$$n.log 2>&1 \
	    || { tail -40 build/fuzz/$$n.log; echo "fuzz: $$n FAILED"; exit 1; }; \
	done; echo "fuzz: all targets ran with no finding"

# ---- test entry points
deps:
	@sh scripts/install-deps.sh

unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do \
	  HC_TOP=$(CURDIR) HC_PYTHON=$(PYTHON) $$t || fail=1; done; exit $$fail

integration: $(BINS) $(BENCH_BINS)
	HC_BIN_DIR=$(CURDIR)/$(O) $(PYTHON) -m pytest -q -p no:cacheprovider tests/sim tests/integration

test: deps
	$(MAKE) --no-print-directory all
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory fuzz-run
	$(MAKE) --no-print-directory integration

install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/haproxy-connect/templates
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 haproxy-templates/* $(DESTDIR)$(PREFIX)/share/haproxy-connect/templates/

# deps first, then a sub-make: pkg-config flags are read after the packages are there (fresh machines).
demo: deps
	@$(MAKE) --no-print-directory all
	@$(PYTHON) contrib/demo/demo.py

bench: deps all $(BENCH_BINS)
	@PYTHON=$(PYTHON) HC_BIN_DIR=$(CURDIR)/$(O) sh bench/run-bench.sh $(BENCH_ARGS)

clean:
	rm -rf build
