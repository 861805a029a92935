// TraceRecordingBackend: an AttentionBackend that forwards every call to an
// inner backend and writes the model's real post-RoPE queries, keys and
// values to a trace (worker/trace/README.md), so policies and budgets can be
// replayed offline (simulator.h) on one prefill.
//
// The prompt length, kept prompt queries and decode steps are fixed up
// front (the header needs them). Prompt K/V and the last
// `n_prompt_queries` prompt queries are held in memory until a layer has
// all prompt_len positions; decode records are written as they come.
// Decode positions past `decode_steps` go to the inner backend unrecorded.
// One sequence only. Finish() completes the file.
//
// Thread-safety: none (as every backend).
#ifndef KVTIER_WORKER_EVAL_TRACE_RECORDER_H_
#define KVTIER_WORKER_EVAL_TRACE_RECORDER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/attention_backend.h"
#include "worker/trace/trace.h"

namespace kvtier::eval {

class TraceRecordingBackend : public model::AttentionBackend {
 public:
  // `inner` must outlive the recorder. INVALID_ARGUMENT for a header the
  // trace format rejects; INTERNAL when the file cannot be created.
  static absl::StatusOr<std::unique_ptr<TraceRecordingBackend>> Create(
      model::AttentionBackend* inner, const std::string& path, uint32_t prompt_len,
      uint32_t n_prompt_queries, uint32_t decode_steps);

  const model::AttentionShape& shape() const override { return inner_->shape(); }
  absl::Status StartSequence(model::SequenceId seq) override;
  absl::Status EndSequence(model::SequenceId seq) override;
  absl::Status AppendTokens(model::SequenceId seq, int pos0,
                            absl::Span<const int> tokens) override;
  absl::Status EndPrefill(model::SequenceId seq) override { return inner_->EndPrefill(seq); }
  absl::Status Append(model::SequenceId seq, int layer, int pos, absl::Span<const float> k,
                      absl::Span<const float> v) override;
  absl::Status Attend(model::SequenceId seq, int layer, absl::Span<const float> q,
                      absl::Span<float> out) override;
  absl::Status AppendAndAttendBatch(model::SequenceId seq, int layer, int pos0, int n_tokens,
                                    absl::Span<const float> k, absl::Span<const float> v,
                                    absl::Span<const float> q, absl::Span<float> out) override;

  // FAILED_PRECONDITION when records are missing (the file stays absent).
  absl::Status Finish() { return writer_.Finish(); }

 private:
  struct Layer {
    TracePromptLayer prompt;
    TraceStep step;  // the pending decode token
    int positions = 0;
  };
  TraceRecordingBackend(model::AttentionBackend* inner, TraceWriter writer);
  absl::Status RecordKv(int layer, int pos, absl::Span<const float> k, absl::Span<const float> v);
  absl::Status RecordQuery(int layer, int pos, absl::Span<const float> q);

  model::AttentionBackend* const inner_;
  TraceWriter writer_;
  const TraceHeader header_;
  std::vector<Layer> layers_;
};

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_TRACE_RECORDER_H_
