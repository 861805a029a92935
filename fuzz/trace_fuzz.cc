// Q/K/V trace files, fuzzed: the header's checks, then the first records.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "worker/trace/trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  absl::StatusOr<TraceReader> reader = TraceReader::Open(fuzz::WriteScratchFile(data, size));
  if (!reader.ok()) return 0;
  TracePromptLayer prompt;
  reader->ReadPromptLayer(0, &prompt).IgnoreError();
  TraceStep step;
  if (reader->header().decode_steps > 0) reader->ReadStep(0, 0, &step).IgnoreError();
  return 0;
}
