#include "worker/eval/trace_recorder.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier::eval {

absl::StatusOr<std::unique_ptr<TraceRecordingBackend>> TraceRecordingBackend::Create(
    model::AttentionBackend* inner, const std::string& path, uint32_t prompt_len,
    uint32_t n_prompt_queries, uint32_t decode_steps) {
  const model::AttentionShape& s = inner->shape();
  TraceHeader h;
  h.n_layers = s.n_layers;
  h.n_q_heads = s.n_heads;
  h.n_kv_heads = s.n_kv_heads;
  h.head_dim = s.head_dim;
  h.dtype = TraceDtype::kF32;
  h.prompt_len = prompt_len;
  h.n_prompt_queries = n_prompt_queries;
  h.decode_steps = decode_steps;
  absl::StatusOr<TraceWriter> writer = TraceWriter::Create(path, h);
  if (!writer.ok()) return writer.status();
  return std::unique_ptr<TraceRecordingBackend>(
      new TraceRecordingBackend(inner, std::move(*writer)));
}

TraceRecordingBackend::TraceRecordingBackend(model::AttentionBackend* inner,
                                             TraceWriter writer)
    : inner_(inner), writer_(std::move(writer)), header_(writer_.header()),
      layers_(header_.n_layers) {}

absl::Status TraceRecordingBackend::StartSequence(model::SequenceId seq) {
  return inner_->StartSequence(seq);
}
absl::Status TraceRecordingBackend::EndSequence(model::SequenceId seq) {
  return inner_->EndSequence(seq);
}
absl::Status TraceRecordingBackend::AppendTokens(model::SequenceId seq, int pos0,
                                                 absl::Span<const int> tokens) {
  return inner_->AppendTokens(seq, pos0, tokens);
}

absl::Status TraceRecordingBackend::RecordKv(int layer, int pos, absl::Span<const float> k,
                                             absl::Span<const float> v) {
  Layer& l = layers_[layer];
  if (pos != l.positions) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " position ", pos, " after ", l.positions));
  }
  ++l.positions;
  if (static_cast<uint32_t>(pos) < header_.prompt_len) {
    l.prompt.keys.insert(l.prompt.keys.end(), k.begin(), k.end());
    l.prompt.values.insert(l.prompt.values.end(), v.begin(), v.end());
  } else {
    l.step.key.assign(k.begin(), k.end());
    l.step.value.assign(v.begin(), v.end());
  }
  return absl::OkStatus();
}

absl::Status TraceRecordingBackend::RecordQuery(int layer, int pos, absl::Span<const float> q) {
  Layer& l = layers_[layer];
  const uint32_t p = static_cast<uint32_t>(pos);
  if (p < header_.prompt_len) {
    if (p + header_.n_prompt_queries >= header_.prompt_len) {
      l.prompt.queries.insert(l.prompt.queries.end(), q.begin(), q.end());
    }
    if (p + 1 == header_.prompt_len) {
      RETURN_IF_ERROR(writer_.WritePromptLayer(layer, l.prompt));
      l.prompt = {};  // free the prompt's memory
    }
    return absl::OkStatus();
  }
  const uint32_t step = p - header_.prompt_len;
  if (step >= header_.decode_steps) return absl::OkStatus();
  l.step.query.assign(q.begin(), q.end());
  return writer_.WriteStep(step, layer, l.step);
}

absl::Status TraceRecordingBackend::Append(model::SequenceId seq, int layer, int pos,
                                           absl::Span<const float> k,
                                           absl::Span<const float> v) {
  RETURN_IF_ERROR(inner_->Append(seq, layer, pos, k, v));
  return RecordKv(layer, pos, k, v);
}

absl::Status TraceRecordingBackend::Attend(model::SequenceId seq, int layer,
                                           absl::Span<const float> q, absl::Span<float> out) {
  RETURN_IF_ERROR(inner_->Attend(seq, layer, q, out));
  return RecordQuery(layer, layers_[layer].positions - 1, q);
}

absl::Status TraceRecordingBackend::AppendAndAttendBatch(
    model::SequenceId seq, int layer, int pos0, int n_tokens, absl::Span<const float> k,
    absl::Span<const float> v, absl::Span<const float> q, absl::Span<float> out) {
  RETURN_IF_ERROR(inner_->AppendAndAttendBatch(seq, layer, pos0, n_tokens, k, v, q, out));
  const size_t kv = shape().kv_dim(), qd = shape().q_dim();
  for (int i = 0; i < n_tokens; ++i) {
    RETURN_IF_ERROR(RecordKv(layer, pos0 + i, k.subspan(i * kv, kv), v.subspan(i * kv, kv)));
    RETURN_IF_ERROR(RecordQuery(layer, pos0 + i, q.subspan(i * qd, qd)));
  }
  return absl::OkStatus();
}

}  // namespace kvtier::eval
