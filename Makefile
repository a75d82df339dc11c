# ds4 build.
#
# Sources are found by directory, so adding a module means adding a file:
#   src/<layer>/*.c      -> build/libds4.a        (files named *_avx2.c get -mavx2 -mfma -mf16c)
#   tools/<name>/*.c     -> ./<name>              (one program per folder, linked with libds4)
#   tests/test_*.c       -> build/ds4-tests       (one Criterion runner for every unit test)
#   tests/fuzz/fuzz_*.c  -> build/fuzz/fuzz_*     (libFuzzer targets; `make fuzz`)
#   src/cuda/*.cu        -> `make cuda`           (nvcc; needs no GPU to build)
#
# Targets: all (default), test, asan, fuzz, fuzz-run, cuda, bench, clean.

CC        ?= cc
OPT       ?= -O2
CFLAGS    ?= $(OPT) -g
WARN      := -Wall -Wextra -Wno-missing-field-initializers
# IEEE f32 without contraction: the known-answer tests compare bit patterns (quants README §7).
BASEFLAGS := -std=c11 -D_GNU_SOURCE -pthread -ffp-contract=off -fno-fast-math $(WARN)
CPPFLAGS  += -Iinclude -Isrc
LDLIBS    := -lpcre2-8 -ljansson -lmicrohttpd -lcrypto -ledit -lm -lpthread
SANFLAGS  :=
ifneq ($(WERROR),)
BASEFLAGS += -Werror
endif

BUILD     ?= build
BINDIR    ?= .
SHARED    ?= ../shared

LIB_DIRS  := src/core src/format src/model src/cpu src/text src/serve
LIB_SRC   := $(sort $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
LIB_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
LIB       := $(BUILD)/libds4.a

TOOL_NAMES := $(sort $(notdir $(patsubst %/,%,$(dir $(wildcard tools/*/*.c)))))
TOOLS     := $(addprefix $(BINDIR)/,$(TOOL_NAMES))
TOOL_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/*/*.c))

TEST_SRC  := $(sort $(wildcard tests/test_*.c) tests/testutil.c)
TEST_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(TEST_SRC))
TEST_BIN  := $(BUILD)/ds4-tests

FUZZ_SRC  := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN  := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
FUZZ_REPLAY := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz-replay/%,$(FUZZ_SRC))

ALL_CFLAGS = $(BASEFLAGS) $(CFLAGS) $(SANFLAGS)

.PHONY: all test test-unit test-e2e asan fuzz fuzz-run fuzz-replay cuda cuda-tools test-cuda bench-cuda bench clean
.SECONDARY:

all: $(TOOLS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -mavx2 -mfma -mf16c -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

define TOOL_RULE
$(BINDIR)/$(1): $$(patsubst %.c,$$(BUILD)/%.o,$$(wildcard tools/$(1)/*.c)) $$(LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(ALL_CFLAGS) $$(LDFLAGS) -o $$@ $$(filter %.o,$$^) $$(LIB) $$(LDLIBS)
endef
$(foreach t,$(TOOL_NAMES),$(eval $(call TOOL_RULE,$(t))))

$(TEST_BIN): $(TEST_OBJ) $(LIB)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $(TEST_OBJ) $(LIB) -lcriterion $(LDLIBS)

# Unit tests read ../shared in place and may run the tools; they find both through the environment.
test-unit: $(TEST_BIN) $(TOOLS)
	DS4_SHARED=$(SHARED) DS4_BIN_DIR=$(BINDIR) DS4_TMP=$(BUILD)/tmp $(TEST_BIN) --jobs=$${DS4_TEST_JOBS:-2} $(TEST_ARGS)

# End-to-end tests (node's test runner against the real tools) live in tests/e2e when present.
test-e2e: $(TOOLS)
	@if [ -f tests/e2e/run.sh ]; then DS4_SHARED=$(SHARED) DS4_BIN_DIR=$(BINDIR) bash tests/e2e/run.sh; fi

# One after the other: the pty-driven CLI tests time the program's answers, and running the e2e
# server next to two Criterion jobs on a 2-core box starves them.
test:
	$(MAKE) test-unit
	$(MAKE) test-e2e

# ASan + UBSan: the unit tests and a replay of every fuzz corpus, in a separate build tree.
asan:
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1 \
	$(MAKE) BUILD=build/asan BINDIR=build/asan/bin OPT=-O1 \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
	  test-unit fuzz-replay

# Replay driver: each fuzz target linked with a plain main() that feeds it the corpus files.
$(BUILD)/fuzz-replay/%: tests/fuzz/%.c tests/fuzz/replay_main.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ $< tests/fuzz/replay_main.c $(LIB) $(LDLIBS)

fuzz-replay: $(FUZZ_REPLAY)
	@for f in $(FUZZ_REPLAY); do n=$$(basename $$f); \
	  echo "replay $$n"; $$f tests/fuzz/corpus/$$n || exit 1; done

# libFuzzer builds (clang). `make fuzz-run FUZZ_SECONDS=600` runs each target that long.
FUZZ_CC     ?= clang
FUZZ_FLAGS  := -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_SECONDS ?= 60
$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIB_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(BASEFLAGS) $(FUZZ_FLAGS) -o $@ $< \
	  $(filter-out %_avx2.c,$(LIB_SRC)) $(if $(filter %_avx2.c,$(LIB_SRC)),-mavx2 -mfma -mf16c $(filter %_avx2.c,$(LIB_SRC))) $(LDLIBS)

fuzz: $(FUZZ_BIN)

fuzz-run: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
	  echo "fuzz $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus-$$n tests/fuzz/corpus/$$n || exit 1; done

# CUDA: compile check with nvcc (no GPU needed); the GPU tests skip cleanly without one.
NVCC      ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80
CUDA_SRC  := $(sort $(wildcard src/cuda/*.cu))
CUDA_OBJ  := $(patsubst %.cu,$(BUILD)/%.o,$(CUDA_SRC))
$(BUILD)/%.o: %.cu $(wildcard src/cuda/*.cuh) $(wildcard src/cuda/*.h) src/cpu/refmath.h src/model/smp_exp.h
	@mkdir -p $(dir $@)
	$(NVCC) -O3 -std=c++17 $(CUDA_ARCH) $(CPPFLAGS) -Xcompiler -Wall,-Wextra -c $< -o $@

CUDA_TEST := $(BUILD)/cuda/ds4-cuda-tests
$(BUILD)/tests/cuda/%.o: tests/cuda/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# The CUDA test program links cudart statically so it runs on a GPU box without our -dev packages.
CUDA_TEST_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(filter-out tests/cuda/test_cuda_model.c,$(sort $(wildcard tests/cuda/*.c))))
# Header dependencies: the tests build model structs (fwd_ws, kv_comp) by hand, so a stale
# object after a header change reads fields at old offsets.
-include $(CUDA_TEST_OBJ:.o=.d)
$(CUDA_TEST): $(CUDA_TEST_OBJ) $(CUDA_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_ARCH) -o $@ $(CUDA_TEST_OBJ) $(CUDA_OBJ) $(LIB) -Xlinker --as-needed $(LDLIBS)

# The GPU model (src/cuda/*.c: weights, state, forward on the op table; issue #7) and its test
# program (tests/cuda/test_cuda_model.c: whole-model logits against the golden and the CPU).
CUDA_CSRC := $(sort $(wildcard src/cuda/*.c))
CUDA_COBJ := $(patsubst %.c,$(BUILD)/%.o,$(CUDA_CSRC))
CUDA_MODEL_TEST := $(BUILD)/cuda/ds4-cuda-model-tests
-include $(CUDA_COBJ:.o=.d) $(BUILD)/tests/cuda/test_cuda_model.d
$(CUDA_MODEL_TEST): $(BUILD)/tests/cuda/test_cuda_model.o $(CUDA_COBJ) $(CUDA_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_ARCH) -o $@ $^ -Xlinker --as-needed $(LDLIBS)

# CUDA-enabled tools in $(BUILD)/cuda/bin: the library rebuilt with -DDS4_CUDA in $(BUILD)/cuda/lib
# (engine/session route backend "cuda" to the GPU model) plus the CUDA objects above, cudart
# static, so the binaries run on a GPU machine without the CUDA -dev packages.
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_TOOL_NAMES := ds4 ds4-server ds4-bench ds4-convert
cuda-tools: $(CUDA_OBJ) $(CUDA_COBJ)
	$(MAKE) BUILD=$(BUILD)/cuda/lib BINDIR=$(BUILD)/cuda/bin CPPFLAGS="$(CPPFLAGS) -DDS4_CUDA" \
	  DS4_CUDA_LINK="$(abspath $(CUDA_OBJ) $(CUDA_COBJ))" $(addprefix $(BUILD)/cuda/bin/,$(CUDA_TOOL_NAMES))
ifneq ($(DS4_CUDA_LINK),)
$(LIB): $(DS4_CUDA_LINK)
LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
endif

cuda: $(CUDA_OBJ) $(CUDA_TEST) $(CUDA_MODEL_TEST) cuda-tools

# On a GPU machine: every CUDA op against the CPU reference (skips, saying so, without a GPU).
test-cuda: $(CUDA_TEST) $(CUDA_MODEL_TEST)
	$(CUDA_TEST)
	DS4_SHARED=$(SHARED) $(CUDA_MODEL_TEST)

bench-cuda: $(CUDA_TEST)
	$(CUDA_TEST) --bench

bench: all
	@if [ -x scripts/bench.sh ]; then ./scripts/bench.sh; else echo "bench: no benchmark script yet"; fi

clean:
	rm -rf build $(addprefix ./,$(TOOL_NAMES))

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(TOOL_OBJ:.o=.d)
