# posthorn build. `make` builds build/posthornd and build/setup.
# Other targets: test, unit, integration, asan, fuzz, bench, run, clean.
CC      ?= cc
BUILD   ?= build
PYTHON  ?= /usr/bin/python3
SAN     ?=
FUZZ_SECONDS ?= 20

CFLAGS_COMMON = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -MMD -MP \
                -Icore -Ifilters
# libev exports libevent-compatible names (event_add, ...). libunbound's
# resolver thread calls libevent by those names, so libevent must come first
# in the link (and stay linked although nothing here calls it directly).
LIBS = -Wl,--push-state,--no-as-needed -l:libevent-2.1.so.7 -Wl,--pop-state \
       -lev -lssl -lcrypto -lsqlite3 -lcrypt -lunbound -lclamav -lspf2 -lm -lpthread

ifeq ($(SAN),1)
  OPT      = -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDSAN    = -fsanitize=address,undefined
else
  OPT      = -O2
  LDSAN    =
endif
CFLAGS  += $(CFLAGS_COMMON) $(OPT)
LDFLAGS += $(LDSAN)

LIB_SRC   = $(sort $(wildcard core/*.c) $(wildcard filters/*.c))
LIB_OBJ   = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
D_SRC     = $(wildcard cmd/posthornd/*.c)
D_OBJ     = $(D_SRC:%.c=$(BUILD)/obj/%.o)
SETUP_SRC = $(wildcard cmd/setup/*.c)
SETUP_OBJ = $(SETUP_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC  = $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN  = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all test unit integration asan asan-test fuzz fuzz-build bench run deps clean docker-test

all: $(BUILD)/posthornd $(BUILD)/setup

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libposthorn.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/posthornd: $(D_OBJ) $(BUILD)/libposthorn.a
	$(CC) $(LDFLAGS) -o $@ $(D_OBJ) $(BUILD)/libposthorn.a $(LIBS)

$(BUILD)/setup: $(SETUP_OBJ) $(BUILD)/libposthorn.a
	$(CC) $(LDFLAGS) -o $@ $(SETUP_OBJ) $(BUILD)/libposthorn.a $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/test.h $(BUILD)/libposthorn.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(BUILD)/libposthorn.a $(LIBS)

# Every unit test binary prints "N passed, N failed"; the runner sums them.
unit: $(UNIT_BIN)
	@tests/run-unit $(UNIT_BIN)

integration: all
	POSTHORN_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

asan:
	$(MAKE) BUILD=build-asan SAN=1 all

asan-test:
	$(MAKE) BUILD=build-asan SAN=1 unit integration

# libFuzzer targets: tests/fuzz/fuzz_NAME.c, seeds in tests/fuzz/corpus/NAME/.
# The core is built once with clang's coverage instrumentation into an
# archive, so each target links only the objects it uses.
FUZZ_SRC = $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN = $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)
FUZZ_LIB_OBJ = $(LIB_SRC:%.c=build-fuzz/obj/%.o)
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 -MMD -MP -Icore -Ifilters \
              -fsanitize=address,undefined -fno-omit-frame-pointer

build-fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

build-fuzz/libposthorn.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

build-fuzz/%: tests/fuzz/%.c build-fuzz/libposthorn.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build-fuzz/libposthorn.a $(LIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: fuzz-build
	@tests/run-fuzz $(FUZZ_SECONDS) $(FUZZ_BIN)

bench: all
	tests/bench/run

# The image end to end with a private dockerd (root; installs docker.io,
# docker-compose and debootstrap when missing). Prints "docker: N passed, N failed".
docker-test:
	$(PYTHON) tests/docker/run_docker_test.py

# The whole suite, as CI runs it: packages, build, unit, integration,
# the same again under ASan/UBSan, and a short libFuzzer run.
test: deps
	@tests/run-all

deps:
	@tests/install-deps

run: all
	tests/dev-run

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(D_OBJ:.o=.d) $(SETUP_OBJ:.o=.d) $(FUZZ_LIB_OBJ:.o=.d)
