// Per-layer Q/K/V traces of one decode, the input of the simulator, the
// profilers and the synthetic benchmarks. Full description with a worked
// size example: worker/trace/README.md.
//
// File layout (all integers little-endian, version 1):
//
//   Header, 64 bytes:
//     0  char[8] magic "KVTTRACE"
//     8  u32 version            (1)
//     12 u32 header_bytes       (64)
//     16 u32 n_layers
//     20 u32 n_q_heads
//     24 u32 n_kv_heads         (divides n_q_heads; GQA group G = Hq / Hkv)
//     28 u32 head_dim
//     32 u32 dtype              (1 = f32, 2 = IEEE f16), for every element
//     36 u32 prompt_len         (>= 1)
//     40 u32 n_prompt_queries   (<= prompt_len: the last prompt rows' queries)
//     44 u32 decode_steps       (>= 0)
//     48 u64 reserved           (0)
//     56 u64 XXH3-64 of bytes [0, 56)
//   Prompt section, one record per layer l = 0..L-1:
//     Q  [n_prompt_queries, n_q_heads, head_dim]  (positions prompt_len -
//                                                  n_prompt_queries ..)
//     K  [prompt_len, n_kv_heads, head_dim]
//     V  [prompt_len, n_kv_heads, head_dim]
//     u64 XXH3-64 of the record's element bytes
//   Decode section, step-major, one record per (step s, layer l):
//     q  [n_q_heads, head_dim]    query of the token at position prompt_len+s
//     k  [n_kv_heads, head_dim]   that token's own key (appended before the
//     v  [n_kv_heads, head_dim]   step's attention, so it attends to itself)
//     u64 XXH3-64 of the record's element bytes
//
// q and k are post-RoPE. Every record has a fixed size, so the offset of any
// record follows from the header: readers seek (pread) and never need the
// whole file in memory. Writers emit records in file order, which is the
// order a model runner produces them (prefill layer by layer, then decode).
//
// Thread-safety: TraceReader is thread-safe (const reads via pread, no shared
// mutable state). TraceWriter is not; use one per thread.
#ifndef KVTIER_WORKER_TRACE_TRACE_H_
#define KVTIER_WORKER_TRACE_TRACE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvtier {

enum class TraceDtype : uint32_t { kF32 = 1, kF16 = 2 };

inline constexpr char kTraceMagic[8] = {'K', 'V', 'T', 'T', 'R', 'A', 'C', 'E'};
inline constexpr uint32_t kTraceVersion = 1;
inline constexpr uint32_t kTraceHeaderBytes = 64;
// Bounds each dimension so every size computation fits in 64 bits and a
// corrupt header cannot ask for absurd allocations.
inline constexpr uint32_t kTraceMaxDim = 1u << 20;

struct TraceHeader {
  uint32_t n_layers = 0;
  uint32_t n_q_heads = 0;
  uint32_t n_kv_heads = 0;
  uint32_t head_dim = 0;
  TraceDtype dtype = TraceDtype::kF32;
  uint32_t prompt_len = 0;
  uint32_t n_prompt_queries = 0;
  uint32_t decode_steps = 0;

  bool operator==(const TraceHeader&) const = default;

  // Elements of one prompt record and of one decode record.
  uint64_t PromptRecordElements() const;
  uint64_t StepRecordElements() const;
  uint64_t ElementBytes() const { return dtype == TraceDtype::kF16 ? 2 : 4; }
  // Bytes of one record including its checksum.
  uint64_t PromptRecordBytes() const;
  uint64_t StepRecordBytes() const;
  // Exact size of a complete file.
  uint64_t FileBytes() const;
  uint64_t PromptRecordOffset(uint32_t layer) const;
  uint64_t StepRecordOffset(uint32_t step, uint32_t layer) const;
};

// INVALID_ARGUMENT when a dimension is zero or too large, n_kv_heads does not
// divide n_q_heads, n_prompt_queries > prompt_len or the dtype is unknown.
absl::Status ValidateTraceHeader(const TraceHeader& header);

// Prefill data of one layer; shapes in the file comment above.
struct TracePromptLayer {
  std::vector<float> queries;  // [n_prompt_queries, n_q_heads, head_dim]
  std::vector<float> keys;     // [prompt_len, n_kv_heads, head_dim]
  std::vector<float> values;   // [prompt_len, n_kv_heads, head_dim]
};

// One decode step of one layer.
struct TraceStep {
  std::vector<float> query;  // [n_q_heads, head_dim]
  std::vector<float> key;    // [n_kv_heads, head_dim]
  std::vector<float> value;  // [n_kv_heads, head_dim]
};

// Writes a trace to `path` atomically: records go to `path + ".tmp"`, which
// Finish() renames into place, so no reader ever sees a partial trace. A
// writer destroyed before Finish() removes its temporary file.
class TraceWriter {
 public:
  // INVALID_ARGUMENT for a bad header; INTERNAL when the file can't be made.
  static absl::StatusOr<TraceWriter> Create(const std::string& path,
                                            const TraceHeader& header);
  TraceWriter(TraceWriter&& other) noexcept;
  TraceWriter& operator=(TraceWriter&& other) = delete;
  TraceWriter(const TraceWriter&) = delete;
  ~TraceWriter();

  // REQUIRES: layer == the number of prompt layers written so far.
  // INVALID_ARGUMENT (nothing written) on order, shape, non-finite values or
  // values out of the dtype's range.
  absl::Status WritePromptLayer(uint32_t layer, const TracePromptLayer& rec);
  // REQUIRES: all prompt layers written; (step, layer) is the next record in
  // step-major order.
  absl::Status WriteStep(uint32_t step, uint32_t layer, const TraceStep& rec);
  // FAILED_PRECONDITION when records are missing; the file then stays absent.
  absl::Status Finish();

  const TraceHeader& header() const { return header_; }

 private:
  TraceWriter(std::string path, TraceHeader header, int fd)
      : path_(std::move(path)), header_(header), fd_(fd) {}
  absl::Status AppendRecord(
      const std::vector<const std::vector<float>*>& parts);

  std::string path_;
  TraceHeader header_;
  int fd_ = -1;
  uint32_t prompt_layers_written_ = 0;
  uint64_t steps_records_written_ = 0;
  bool finished_ = false;
};

// Reads a trace written by TraceWriter. Open validates the header and the
// exact file size; each Read validates the record's checksum and returns
// nothing on failure (the output is only replaced on success).
class TraceReader {
 public:
  // NOT_FOUND when the file is absent; INVALID_ARGUMENT for anything but a
  // regular file holding a v1 trace (magic, version, header fields);
  // DATA_LOSS when the header checksum fails or the file is truncated or has
  // trailing bytes.
  static absl::StatusOr<TraceReader> Open(const std::string& path);
  TraceReader(TraceReader&& other) noexcept;
  TraceReader& operator=(TraceReader&& other) = delete;
  TraceReader(const TraceReader&) = delete;
  ~TraceReader();

  const TraceHeader& header() const { return header_; }

  // OUT_OF_RANGE for a bad index; DATA_LOSS on a short read or bad checksum.
  absl::Status ReadPromptLayer(uint32_t layer, TracePromptLayer* out) const;
  absl::Status ReadStep(uint32_t step, uint32_t layer, TraceStep* out) const;

 private:
  TraceReader(TraceHeader header, int fd) : header_(header), fd_(fd) {}
  // Reads `count` elements plus the checksum at `offset` into `parts`.
  absl::Status ReadRecord(uint64_t offset,
                          const std::vector<std::vector<float>*>& parts,
                          const std::vector<uint64_t>& sizes) const;

  TraceHeader header_;
  int fd_ = -1;
};

// IEEE binary16 conversions (round to nearest even), used by the f16 dtype.
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t bits);

}  // namespace kvtier

#endif  // KVTIER_WORKER_TRACE_TRACE_H_
