#include "worker/trace/trace_gen.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier {
namespace {

// Stream kinds, so queries, keys, values and choices never share numbers.
enum Kind : uint64_t {
  kQueryNoise = 1,
  kKeyNoise = 2,
  kValue = 3,
  kRetrieval = 4,
  kNeedles = 5,
  kTheta = 6,
};

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t StreamId(uint64_t seed, uint64_t kind, uint64_t a, uint64_t b,
                  uint64_t c) {
  uint64_t state = seed;
  uint64_t h = SplitMix64(state);
  for (uint64_t v : {kind, a, b, c}) {
    state = h ^ v;
    h = SplitMix64(state);
  }
  return h;
}

// Uniform in (0, 1].
double Uniform(uint64_t& state) {
  return (static_cast<double>(SplitMix64(state) >> 11) + 1.0) * 0x1.0p-53;
}

constexpr uint32_t kFirstRopeChannel = 2;

}  // namespace

absl::Status ValidateTraceGenOptions(const TraceGenOptions& o) {
  TraceHeader h;
  h.n_layers = o.n_layers;
  h.n_q_heads = o.n_q_heads;
  h.n_kv_heads = o.n_kv_heads;
  h.head_dim = o.head_dim;
  h.dtype = o.dtype;
  h.prompt_len = o.prompt_len;
  h.n_prompt_queries = o.n_prompt_queries;
  h.decode_steps = o.decode_steps;
  RETURN_IF_ERROR(ValidateTraceHeader(h));
  if (o.n_rope_pairs == 0 || o.local_window == 0) {
    return absl::InvalidArgumentError(
        "tracegen n_rope_pairs and local_window must be >= 1");
  }
  if (uint64_t{o.head_dim} < 3 + 2 * uint64_t{o.n_rope_pairs}) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tracegen head_dim ", o.head_dim, " < 3 + 2 * n_rope_pairs (",
        3 + 2 * uint64_t{o.n_rope_pairs}, ")"));
  }
  if (o.n_sink_tokens >= o.prompt_len) {
    return absl::InvalidArgumentError("tracegen n_sink_tokens >= prompt_len");
  }
  if (o.n_retrieval_heads > o.n_q_heads) {
    return absl::InvalidArgumentError("tracegen n_retrieval_heads > n_q_heads");
  }
  if (o.n_needles > 0 && uint64_t{o.prompt_len} < uint64_t{o.needle_margin} +
                                                      o.n_sink_tokens +
                                                      o.n_needles) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tracegen: ", o.n_needles, " needles do not fit in [n_sink_tokens, ",
        "prompt_len - needle_margin)"));
  }
  for (double v :
       {o.sink_logit, o.local_logit, o.needle_logit, o.noise_logit}) {
    if (!std::isfinite(v) || v < 0 || v > 1e4) {
      return absl::InvalidArgumentError(
          "tracegen logit strengths must lie in [0, 1e4]");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TraceGenerator> TraceGenerator::Create(
    const TraceGenOptions& options) {
  RETURN_IF_ERROR(ValidateTraceGenOptions(options));
  return TraceGenerator(options);
}

TraceGenerator::TraceGenerator(const TraceGenOptions& o) : options_(o) {
  const double sqrt_d = std::sqrt(static_cast<double>(o.head_dim));
  // q_c * k_c / sqrt(d) = logit with both sides at amplitude sqrt(logit*sqrt
  // d).
  sink_amp_ = static_cast<float>(std::sqrt(o.sink_logit * sqrt_d));
  needle_amp_ = static_cast<float>(std::sqrt(o.needle_logit * sqrt_d));
  rope_amp_ =
      static_cast<float>(std::sqrt(o.local_logit * sqrt_d / o.n_rope_pairs));
  const uint32_t n_noise = o.head_dim - kFirstRopeChannel - 2 * o.n_rope_pairs;
  noise_sigma_ = static_cast<float>(
      std::sqrt(o.noise_logit * sqrt_d / std::sqrt(static_cast<double>(n_noise))));

  retrieval_.assign(size_t{o.n_layers} * o.n_q_heads, false);
  for (uint32_t l = 0; l < o.n_layers; ++l) {
    std::vector<uint32_t> heads(o.n_q_heads);
    for (uint32_t h = 0; h < o.n_q_heads; ++h) heads[h] = h;
    uint64_t state = StreamId(o.seed, kRetrieval, l, 0, 0);
    for (uint32_t i = 0; i < o.n_retrieval_heads; ++i) {
      const uint32_t j =
          i + static_cast<uint32_t>(SplitMix64(state) % (o.n_q_heads - i));
      std::swap(heads[i], heads[j]);
      retrieval_[size_t{l} * o.n_q_heads + heads[i]] = true;
    }
  }

  needle_.assign(o.prompt_len, false);
  uint64_t state = StreamId(o.seed, kNeedles, 0, 0, 0);
  const uint32_t span =
      o.n_needles == 0 ? 0 : o.prompt_len - o.needle_margin - o.n_sink_tokens;
  while (needles_.size() < o.n_needles) {
    const uint32_t pos =
        o.n_sink_tokens + static_cast<uint32_t>(SplitMix64(state) % span);
    if (!needle_[pos]) {
      needle_[pos] = true;
      needles_.push_back(pos);
    }
  }
  std::sort(needles_.begin(), needles_.end());

  theta_.resize(size_t{o.n_layers} * o.n_kv_heads * o.n_rope_pairs);
  for (uint32_t l = 0; l < o.n_layers; ++l) {
    for (uint32_t g = 0; g < o.n_kv_heads; ++g) {
      uint64_t s = StreamId(o.seed, kTheta, l, g, 0);
      for (uint32_t i = 0; i < o.n_rope_pairs; ++i) {
        theta_[(size_t{l} * o.n_kv_heads + g) * o.n_rope_pairs + i] =
            (1.0 + 3.0 * Uniform(s)) / o.local_window;
      }
    }
  }
}

TraceHeader TraceGenerator::header() const {
  TraceHeader h;
  h.n_layers = options_.n_layers;
  h.n_q_heads = options_.n_q_heads;
  h.n_kv_heads = options_.n_kv_heads;
  h.head_dim = options_.head_dim;
  h.dtype = options_.dtype;
  h.prompt_len = options_.prompt_len;
  h.n_prompt_queries = options_.n_prompt_queries;
  h.decode_steps = options_.decode_steps;
  return h;
}

bool TraceGenerator::IsRetrievalHead(uint32_t layer, uint32_t q_head) const {
  return retrieval_[size_t{layer} * options_.n_q_heads + q_head];
}

void TraceGenerator::AddRope(uint32_t layer, uint32_t kv_head, uint32_t pos,
                             float* out) const {
  const double* theta =
      &theta_[(size_t{layer} * options_.n_kv_heads + kv_head) *
              options_.n_rope_pairs];
  for (uint32_t i = 0; i < options_.n_rope_pairs; ++i) {
    const double phase = pos * theta[i];
    out[kFirstRopeChannel + 2 * i] +=
        rope_amp_ * static_cast<float>(std::cos(phase));
    out[kFirstRopeChannel + 2 * i + 1] +=
        rope_amp_ * static_cast<float>(std::sin(phase));
  }
}

void TraceGenerator::AddNoise(uint64_t stream, float sigma, float* out) const {
  const uint32_t first = kFirstRopeChannel + 2 * options_.n_rope_pairs;
  uint64_t state = stream;
  for (uint32_t c = first; c < options_.head_dim; ++c) {
    // Box-Muller; one normal per pair of uniforms keeps the code obvious.
    const double r = std::sqrt(-2.0 * std::log(Uniform(state)));
    const double z = r * std::cos(2.0 * std::numbers::pi * Uniform(state));
    out[c] += sigma * static_cast<float>(z);
  }
}

void TraceGenerator::Query(uint32_t layer, uint32_t q_head, uint32_t pos,
                           float* out) const {
  std::fill(out, out + options_.head_dim, 0.0f);
  out[0] = sink_amp_;
  out[1] = IsRetrievalHead(layer, q_head) ? needle_amp_ : 0.0f;
  const uint32_t group = options_.n_q_heads / options_.n_kv_heads;
  AddRope(layer, q_head / group, pos, out);
  AddNoise(StreamId(options_.seed, kQueryNoise, layer, q_head, pos),
           noise_sigma_, out);
}

void TraceGenerator::Key(uint32_t layer, uint32_t kv_head, uint32_t pos,
                         float* out) const {
  std::fill(out, out + options_.head_dim, 0.0f);
  const bool sink = pos < options_.n_sink_tokens;
  out[0] = sink ? sink_amp_ : 0.0f;
  out[1] = pos < needle_.size() && needle_[pos] ? needle_amp_ : 0.0f;
  // Sink keys carry no position signal (as in real models, where they are
  // outliers on a few channels), so their pull does not swing with the
  // query's phase.
  if (!sink) AddRope(layer, kv_head, pos, out);
  AddNoise(StreamId(options_.seed, kKeyNoise, layer, kv_head, pos),
           noise_sigma_, out);
}

void TraceGenerator::Value(uint32_t layer, uint32_t kv_head, uint32_t pos,
                           float* out) const {
  uint64_t state = StreamId(options_.seed, kValue, layer, kv_head, pos);
  for (uint32_t c = 0; c < options_.head_dim; ++c) {
    const double r = std::sqrt(-2.0 * std::log(Uniform(state)));
    out[c] = static_cast<float>(
        r * std::cos(2.0 * std::numbers::pi * Uniform(state)));
  }
}

TracePromptLayer TraceGenerator::PromptLayer(uint32_t layer) const {
  const TraceGenOptions& o = options_;
  const size_t d = o.head_dim;
  TracePromptLayer rec;
  rec.queries.resize(size_t{o.n_prompt_queries} * o.n_q_heads * d);
  const uint32_t first_q = o.prompt_len - o.n_prompt_queries;
  for (uint32_t i = 0; i < o.n_prompt_queries; ++i) {
    for (uint32_t h = 0; h < o.n_q_heads; ++h) {
      Query(layer, h, first_q + i,
            &rec.queries[(size_t{i} * o.n_q_heads + h) * d]);
    }
  }
  rec.keys.resize(size_t{o.prompt_len} * o.n_kv_heads * d);
  rec.values.resize(rec.keys.size());
  for (uint32_t t = 0; t < o.prompt_len; ++t) {
    for (uint32_t g = 0; g < o.n_kv_heads; ++g) {
      const size_t at = (size_t{t} * o.n_kv_heads + g) * d;
      Key(layer, g, t, &rec.keys[at]);
      Value(layer, g, t, &rec.values[at]);
    }
  }
  return rec;
}

TraceStep TraceGenerator::Step(uint32_t step, uint32_t layer) const {
  const TraceGenOptions& o = options_;
  const size_t d = o.head_dim;
  const uint32_t pos = o.prompt_len + step;
  TraceStep rec;
  rec.query.resize(size_t{o.n_q_heads} * d);
  for (uint32_t h = 0; h < o.n_q_heads; ++h) {
    Query(layer, h, pos, &rec.query[h * d]);
  }
  rec.key.resize(size_t{o.n_kv_heads} * d);
  rec.value.resize(rec.key.size());
  for (uint32_t g = 0; g < o.n_kv_heads; ++g) {
    Key(layer, g, pos, &rec.key[g * d]);
    Value(layer, g, pos, &rec.value[g * d]);
  }
  return rec;
}

absl::Status GenerateTraceFile(const TraceGenOptions& options,
                               const std::string& path) {
  ASSIGN_OR_RETURN(TraceGenerator gen, TraceGenerator::Create(options));
  ASSIGN_OR_RETURN(TraceWriter writer, TraceWriter::Create(path, gen.header()));
  for (uint32_t l = 0; l < options.n_layers; ++l) {
    RETURN_IF_ERROR(writer.WritePromptLayer(l, gen.PromptLayer(l)));
  }
  for (uint32_t s = 0; s < options.decode_steps; ++s) {
    for (uint32_t l = 0; l < options.n_layers; ++l) {
      RETURN_IF_ERROR(writer.WriteStep(s, l, gen.Step(s, l)));
    }
  }
  return writer.Finish();
}

}  // namespace kvtier
