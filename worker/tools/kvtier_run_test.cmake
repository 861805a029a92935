# End-to-end check of the kvtier-run CLI (run by CTest with -P):
#   - stories260K, greedy from BOS over 200 positions: stdout is exactly the
#     llama2.c output quoted in the model's README (plus llama2.c's final
#     newline), for the dense reference and the worker's full-cache policy;
#   - --logits-out writes the prompt's tokens and logits;
#   - usage errors exit 2, load errors exit 1, and neither writes stdout;
#   - --budget-unit memory budgets every layer of ArkVale and Quest;
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
expect_failure(2 --model "${MODEL_DIR}/stories260K.bin" --digest-type bf16)
# Under a memory budget ArkVale and Quest keep no dense layers: every layer
# holds budget tokens. `policy` over 400 positions (25 pages) at `budget`
# tokens of memory exits `want_rc` with stderr matching `pattern`.
function(expect_memory policy budget want_rc pattern)
  execute_process(
    COMMAND "${KVTIER_RUN}" --model "${MODEL_DIR}/stories260K.bin"
            --tokenizer "${MODEL_DIR}/tok512.bin" --steps 400 --policy ${policy}
            --budget ${budget} --budget-unit memory
    OUTPUT_QUIET ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL want_rc OR NOT err MATCHES "${pattern}")
    message(FATAL_ERROR "${policy} at ${budget} tokens of memory: exit ${rc}: ${err}")
  endif()
endfunction()
# 4 pages a layer: below the 6 ArkVale's top-k needs (its half of the
# budget must cover the sink and window pages).
expect_memory(arkvale 64 1 "layer 0 gets 4 pages, below the 6")
# 320 tokens: 20 pages in every layer (per layer, the first two would keep
# all 25), and the stats line names the peak resident bytes.
expect_memory(arkvale 320 0 "budget=20 pages of 16 tokens \\(last layer\\), peak resident KV=")
# Quest pages out what it does not attend: 4 pages a layer.
expect_memory(quest 64 0 "budget=4 pages of 16 tokens \\(last layer\\), peak resident KV=")
expect_failure(1 --model "${MODEL_DIR}/stories260K.bin"
               --tokenizer "${MODEL_DIR}/tok512.bin" --policy quest_per_head --budget 64
               --budget-unit memory)

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
