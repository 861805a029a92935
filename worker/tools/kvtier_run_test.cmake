# End-to-end check of the kvtier-run CLI (run by CTest with -P):
#   - stories260K, greedy from BOS over 200 positions: stdout is exactly the
#     llama2.c output quoted in the model's README (plus llama2.c's final
#     newline), for the dense reference and the worker's full-cache policy;
#   - --logits-out writes the prompt's tokens and logits;
#   - usage errors exit 2, load errors exit 1, and neither writes stdout;
#   - --budget-unit memory pays for ArkVale's dense layers, refuses Quest;
#   - on an AVX2 CPU the dense layers run on OpenBLAS kernels that use it.
# Inputs: KVTIER_RUN (the binary), MODEL_DIR (stories260K), WORK_DIR (for
# the --logits-out file).

file(READ "${MODEL_DIR}/README.md" readme)
string(FIND "${readme}" "## Known output" section)
string(SUBSTRING "${readme}" ${section} -1 tail)
string(FIND "${tail}" "```\n" open)
math(EXPR start "${open} + 4")
string(SUBSTRING "${tail}" ${start} -1 tail)
string(FIND "${tail}" "\n```" close)
string(SUBSTRING "${tail}" 0 ${close} oracle)

foreach(policy dense full)
  execute_process(
    COMMAND "${KVTIER_RUN}" --model "${MODEL_DIR}/stories260K.bin"
            --tokenizer "${MODEL_DIR}/tok512.bin" --steps 200
            --temperature 0 --policy ${policy}
    OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "policy ${policy}: exit ${rc}: ${err}")
  endif()
  if(NOT out STREQUAL "${oracle}\n")
    message(FATAL_ERROR "policy ${policy}: stdout differs from the oracle:\n"
                        "${out}\n--- want ---\n${oracle}")
  endif()
endforeach()

# --logits-out: int32 n=1, the BOS token 1, int32 vocab=512, 512 floats.
set(dump "${WORK_DIR}/kvtier_run_logits.bin")
execute_process(
  COMMAND "${KVTIER_RUN}" --model "${MODEL_DIR}/stories260K.bin"
          --tokenizer "${MODEL_DIR}/tok512.bin" --steps 2 --policy dense
          --logits-out "${dump}"
  OUTPUT_QUIET ERROR_VARIABLE err RESULT_VARIABLE rc)
file(SIZE "${dump}" dump_bytes)
file(READ "${dump}" header LIMIT 12 HEX)
if(NOT rc EQUAL 0 OR NOT dump_bytes EQUAL 2060 OR
   NOT header STREQUAL "010000000100000000020000")
  message(FATAL_ERROR "--logits-out: exit ${rc}, ${dump_bytes} bytes, "
                      "header ${header}: ${err}")
endif()

function(expect_failure want_rc)
  execute_process(COMMAND "${KVTIER_RUN}" ${ARGN}
    OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL want_rc OR NOT out STREQUAL "" OR err STREQUAL "")
    message(FATAL_ERROR "${ARGN}: exit ${rc} (want ${want_rc}), "
                        "stdout '${out}', stderr '${err}'")
  endif()
endfunction()

expect_failure(2 --model "${MODEL_DIR}/stories260K.bin" --policy lru)
expect_failure(2 --model "${MODEL_DIR}/stories260K.bin" --steps zero)
expect_failure(2 --prompt hi)
expect_failure(1 --model "${MODEL_DIR}/absent.bin"
               --tokenizer "${MODEL_DIR}/tok512.bin")
expect_failure(1 --model "${MODEL_DIR}/stories260K.bin")
expect_failure(1 --model "${MODEL_DIR}/tok512.bin"
               --tokenizer "${MODEL_DIR}/tok512.bin")
expect_failure(2 --model "${MODEL_DIR}/stories260K.bin" --budget-unit bytes)
# Quest keeps every page: a memory budget cannot bound it.
expect_failure(1 --model "${MODEL_DIR}/stories260K.bin"
               --tokenizer "${MODEL_DIR}/tok512.bin" --policy quest --budget 64
               --budget-unit memory)

# Under a memory budget ArkVale's dense layers are paid for from it.
# ArkVale over 400 positions (25 pages) at `budget` tokens of memory exits
# `want_rc` with stderr matching `pattern`.
function(expect_arkvale_memory budget want_rc pattern)
  execute_process(
    COMMAND "${KVTIER_RUN}" --model "${MODEL_DIR}/stories260K.bin"
            --tokenizer "${MODEL_DIR}/tok512.bin" --steps 400 --policy arkvale
            --budget ${budget} --budget-unit memory
    OUTPUT_QUIET ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL want_rc OR NOT err MATCHES "${pattern}")
    message(FATAL_ERROR "arkvale at ${budget} tokens of memory: exit ${rc}: ${err}")
  endif()
endfunction()
# 5 layers x 12 pages = 60; the two dense layers take 50, the other three
# 3 each, below the 6 its top-k needs.
expect_arkvale_memory(192 1 "leaving layer 2 3 pages, below the 6")
# 320 tokens: 100 pages, 50 left, 16 a layer, and the stats line names the
# peak resident bytes.
expect_arkvale_memory(320 0 "budget=16 pages of 16 tokens \\(last layer\\), peak resident KV=")

# More prompt tokens than --steps positions: refused before any text.
expect_failure(1 --model "${MODEL_DIR}/stories260K.bin"
               --tokenizer "${MODEL_DIR}/tok512.bin" --steps 3
               --prompt "Once upon a time there was a cat")

# The dense layers run on OpenBLAS kernels that use the CPU's vectors: where
# the CPU has AVX2 and FMA and OPENBLAS_CORETYPE is unset, the kernel set
# OpenBLAS reports last (after kvtier-run has run itself again, if it had
# to) is none of its pre-AVX2 fallbacks.
file(READ "/proc/cpuinfo" cpuinfo)
if(cpuinfo MATCHES "flags[^\n]* avx2[ \n]" AND cpuinfo MATCHES "flags[^\n]* fma[ \n]")
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -E env --unset=OPENBLAS_CORETYPE OPENBLAS_VERBOSE=2
            "${KVTIER_RUN}" --model "${MODEL_DIR}/stories260K.bin"
            --tokenizer "${MODEL_DIR}/tok512.bin" --steps 2 --policy dense
    OUTPUT_QUIET ERROR_VARIABLE err RESULT_VARIABLE rc)
  string(REGEX MATCHALL "Core: [A-Za-z0-9]+" cores "${err}")
  list(LENGTH cores n_cores)
  if(NOT rc EQUAL 0 OR n_cores EQUAL 0)
    message(FATAL_ERROR "kernel choice: exit ${rc}, no 'Core:' line: ${err}")
  endif()
  list(GET cores -1 last)
  string(TOLOWER "${last}" last)
  string(REPLACE "core: " "" last "${last}")
  if(last MATCHES "^(prescott|core2|penryn|dunnington|nehalem|atom|sandybridge)$")
    message(FATAL_ERROR "kvtier-run runs OpenBLAS's ${last} kernels on an AVX2 CPU: ${err}")
  endif()
endif()
