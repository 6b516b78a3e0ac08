# Clickstream pipeline: one Makefile for the libraries, services, tools and tests.
#
#   make             build every binary into build/bin/
#   make up / down   run / stop the whole pipeline locally (scripts/up.sh)
#   make test        install what is missing, build, run unit + integration tests
#   make unit        unit tests only (no network)
#   make asan        unit + integration tests under AddressSanitizer/UBSan
#   make bench       benchmarks -> bench/report.md
#   make e2e-long    long end-to-end run against the reference
#   make test-one T=<name>   one test: a unit test (test_event) or an
#                            integration test (tests/integration/test_x.py[::case])

BUILD    ?= build
CC       ?= cc
OPT      ?= -O2
SAN      ?=
PKGS     := rdkafka hiredis libmicrohttpd libwebsockets jansson avro-c libcurl zlib liblz4 openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
            -fno-strict-aliasing -D_GNU_SOURCE -Ilibcommon $(PKG_CFLAGS) $(SAN) -MMD -MP
LDFLAGS  += $(SAN)
LDLIBS   := $(PKG_LIBS) -lpthread -lm

# Every folder under services/ with a main.c is a service; tools/<name>/ with a
# main.c is a tool. Both land in $(BUILD)/bin/<folder name>.
SERVICES := $(patsubst services/%/main.c,%,$(wildcard services/*/main.c))
TOOLS    := $(patsubst tools/%/main.c,%,$(wildcard tools/*/main.c))
BINS     := $(addprefix $(BUILD)/bin/,$(SERVICES) $(TOOLS))

CM_SRC   := $(wildcard libcommon/*.c)
CM_OBJ   := $(patsubst %.c,$(BUILD)/obj/%.o,$(CM_SRC))
CM_LIB   := $(BUILD)/lib/libcommon.a

# A service's (or tool's) objects other than main.o also go into lib<name>.a,
# so that unit tests can link its parts.
part_src  = $(filter-out $(2)/$(1)/main.c,$(wildcard $(2)/$(1)/*.c))
part_obj  = $(patsubst %.c,$(BUILD)/obj/%.o,$(call part_src,$(1),$(2)))
SVC_LIBS := $(foreach s,$(SERVICES) $(TOOLS),$(BUILD)/lib/lib$(s).a)

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all clean unit test asan valgrind bench e2e-long up down deps test-one fmt
all: $(BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(CM_LIB): $(CM_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

define bin_rules
$(BUILD)/lib/lib$(1).a: $(call part_obj,$(1),$(2))
	@mkdir -p $$(dir $$@)
	rm -f $$@ && ar rcs $$@ $$^
$(BUILD)/bin/$(1): $(BUILD)/obj/$(2)/$(1)/main.o $(BUILD)/lib/lib$(1).a $(CM_LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach s,$(SERVICES),$(eval $(call bin_rules,$(s),services)))
$(foreach t,$(TOOLS),$(eval $(call bin_rules,$(t),tools)))

$(BUILD)/tests/%: tests/unit/%.c $(SVC_LIBS) $(CM_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(SVC_LIBS) $(CM_LIB) $(LDLIBS) -lcmocka

unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(BUILD)

deps:
	@scripts/deps.sh

test:
	@scripts/test.sh

test-one:
	@scripts/test.sh --one "$(T)"

asan:
	@BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer" scripts/test.sh

valgrind:
	@scripts/test.sh --unit-only --valgrind

bench:
	@scripts/bench.sh

e2e-long:
	@scripts/e2e-long.sh

up:
	@scripts/up.sh

down:
	@scripts/down.sh

fmt:
	clang-format -i libcommon/*.[ch] services/*/*.[ch] tools/*/*.[ch] tests/unit/*.c

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
