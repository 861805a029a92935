#include "worker/trace/trace_profiler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier {
namespace {

double Dot(const float* a, const float* b, uint32_t d) {
  double s = 0;
  for (uint32_t c = 0; c < d; ++c) s += double{a[c]} * b[c];
  return s;
}

// In-place softmax of v[0, n).
void Softmax(std::vector<double>& v, size_t n) {
  double mx = v[0];
  for (size_t j = 1; j < n; ++j) mx = std::max(mx, v[j]);
  double sum = 0;
  for (size_t j = 0; j < n; ++j) sum += (v[j] = std::exp(v[j] - mx));
  for (size_t j = 0; j < n; ++j) v[j] /= sum;
}

const float* KeyOf(const std::vector<float>& keys, const TraceHeader& h,
                   uint32_t pos, uint32_t kv_head) {
  return &keys[(size_t{pos} * h.n_kv_heads + kv_head) * h.head_dim];
}

// SnapKV scores of one query head over the prefix [0, P - window), pooled.
std::vector<double> SnapKvScores(const TracePromptLayer& p,
                                 const TraceHeader& h, uint32_t q_head,
                                 uint32_t window, uint32_t kernel) {
  const uint32_t d = h.head_dim;
  const uint32_t n = h.prompt_len - window;
  const uint32_t kv_head = q_head / (h.n_q_heads / h.n_kv_heads);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> acc(n, 0.0), row(h.prompt_len);
  for (uint32_t i = 0; i < window; ++i) {
    const uint32_t qi = h.n_prompt_queries - window + i;
    const uint32_t pos = h.prompt_len - window + i;
    const float* q = &p.queries[(size_t{qi} * h.n_q_heads + q_head) * d];
    for (uint32_t j = 0; j <= pos; ++j) {
      row[j] = Dot(q, KeyOf(p.keys, h, j, kv_head), d) * scale;
    }
    Softmax(row, pos + 1);
    for (uint32_t j = 0; j < n; ++j) acc[j] += row[j];
  }
  std::vector<double> pooled(n, 0.0);
  const int64_t half = kernel / 2;
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t t = std::max<int64_t>(0, j - half);
         t <= std::min<int64_t>(n - 1, j + half); ++t) {
      s += acc[t];
    }
    pooled[j] = s / kernel;
  }
  return pooled;
}

// Per KV head: the mean of its group's SnapKV scores.
std::vector<std::vector<double>> GroupScores(const TracePromptLayer& p,
                                             const TraceHeader& h,
                                             uint32_t window, uint32_t kernel) {
  const uint32_t group = h.n_q_heads / h.n_kv_heads;
  std::vector<std::vector<double>> out(h.n_kv_heads);
  for (uint32_t q = 0; q < h.n_q_heads; ++q) {
    std::vector<double> s = SnapKvScores(p, h, q, window, kernel);
    std::vector<double>& dst = out[q / group];
    if (dst.empty()) dst.assign(s.size(), 0.0);
    for (size_t j = 0; j < s.size(); ++j) dst[j] += s[j] / group;
  }
  return out;
}

absl::Status CheckWindow(const TraceHeader& h, uint32_t window, uint32_t kernel,
                         uint32_t protected_lead) {
  if (window == 0 || window > h.n_prompt_queries) {
    return absl::InvalidArgumentError(
        absl::StrCat("profiling window ", window, " needs 1..",
                     h.n_prompt_queries, " prompt queries in the trace"));
  }
  if (uint64_t{window} + protected_lead >= h.prompt_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("profiling: prompt_len ", h.prompt_len,
                     " leaves no token outside the sinks and window"));
  }
  if (kernel == 0 || kernel % 2 == 0) {
    return absl::InvalidArgumentError("profiling kernel must be odd");
  }
  return absl::OkStatus();
}

// ||v_j|| over the layer's mean ([prompt_len, n_kv_heads]), the stand-in
// for ||W_O v_j||.
std::vector<double> ValueNorms(const TracePromptLayer& p,
                               const TraceHeader& h) {
  const uint32_t d = h.head_dim;
  std::vector<double> vnorm(size_t{h.prompt_len} * h.n_kv_heads);
  double mean = 0;
  for (size_t i = 0; i < vnorm.size(); ++i) {
    vnorm[i] = std::sqrt(Dot(&p.values[i * d], &p.values[i * d], d));
    mean += vnorm[i] / static_cast<double>(vnorm.size());
  }
  if (mean > 0) {
    for (double& v : vnorm) v /= mean;
  }
  return vnorm;
}

// Per KV head, per prompt token j < P - window: the max over decode steps and
// the head's query group of attention probability x normalised ||v_j||.
// Tokens before n_sink stay 0 (they are never evicted).
absl::StatusOr<std::vector<std::vector<double>>> OracleUtilities(
    const TraceReader& trace, uint32_t layer, const TracePromptLayer& p,
    const LukvProfilingOptions& o) {
  const TraceHeader& h = trace.header();
  const uint32_t d = h.head_dim, group = h.n_q_heads / h.n_kv_heads;
  const uint32_t end = h.prompt_len - o.window;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const std::vector<double> vnorm = ValueNorms(p, h);
  std::vector<std::vector<double>> util(h.n_kv_heads,
                                        std::vector<double>(end, 0.0));
  std::vector<float> decode_keys;  // [step, n_kv_heads, d]
  std::vector<double> row(size_t{h.prompt_len} + h.decode_steps);
  for (uint32_t s = 0; s < h.decode_steps; ++s) {
    TraceStep step;
    RETURN_IF_ERROR(trace.ReadStep(s, layer, &step));
    decode_keys.insert(decode_keys.end(), step.key.begin(), step.key.end());
    for (uint32_t q = 0; q < h.n_q_heads; ++q) {
      const uint32_t g = q / group;
      const float* qv = &step.query[size_t{q} * d];
      for (uint32_t j = 0; j < h.prompt_len; ++j) {
        row[j] = Dot(qv, KeyOf(p.keys, h, j, g), d) * scale;
      }
      for (uint32_t t = 0; t <= s; ++t) {
        row[h.prompt_len + t] =
            Dot(qv, &decode_keys[(size_t{t} * h.n_kv_heads + g) * d], d) *
            scale;
      }
      Softmax(row, size_t{h.prompt_len} + s + 1);
      for (uint32_t j = o.n_sink; j < end; ++j) {
        util[g][j] =
            std::max(util[g][j], row[j] * vnorm[size_t{j} * h.n_kv_heads + g]);
      }
    }
  }
  return util;
}

// Cumulative loss of evicting [n_sink, P - window) in ascending scorer
// order, ties to the earlier position.
LukvCurve LossCurve(const TraceHeader& h, const LukvProfilingOptions& o,
                    const std::vector<double>& scores,
                    const std::vector<double>& util) {
  const uint32_t first = o.n_sink, end = h.prompt_len - o.window;
  std::vector<uint32_t> order(end - first);
  std::iota(order.begin(), order.end(), first);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return scores[a] < scores[b];
  });
  LukvCurve c;
  c.length = h.prompt_len;
  c.protected_tokens = o.n_sink + o.window;
  c.loss.assign(1, 0.0);
  for (uint32_t j : order) c.loss.push_back(c.loss.back() + util[j]);
  return c;
}

}  // namespace

absl::StatusOr<XkvProfile> ProfileXkv(const TraceReader& trace,
                                      const XkvProfilingOptions& o) {
  const TraceHeader& h = trace.header();
  RETURN_IF_ERROR(CheckWindow(h, o.window, o.kernel, 0));
  XkvProfile profile;
  profile.n_layers = h.n_layers;
  profile.window = o.window;
  profile.kernel = o.kernel;
  profile.samples.resize(1);
  for (uint32_t l = 0; l < h.n_layers; ++l) {
    TracePromptLayer p;
    RETURN_IF_ERROR(trace.ReadPromptLayer(l, &p));
    std::vector<std::vector<double>> heads;
    if (o.pool_gqa) {
      heads = GroupScores(p, h, o.window, o.kernel);
    } else {
      for (uint32_t q = 0; q < h.n_q_heads; ++q) {
        heads.push_back(SnapKvScores(p, h, q, o.window, o.kernel));
      }
    }
    std::vector<double> inc(h.prompt_len - o.window, 0.0);
    for (std::vector<double>& s : heads) {
      std::sort(s.begin(), s.end(), std::greater<double>());
      for (size_t i = 0; i < s.size(); ++i) inc[i] += s[i];
    }
    profile.samples[0].push_back(std::move(inc));
  }
  RETURN_IF_ERROR(ValidateXkvProfile(profile));
  return profile;
}

absl::StatusOr<LukvProfile> ProfileLukv(const TraceReader& trace,
                                        const LukvProfilingOptions& o) {
  const TraceHeader& h = trace.header();
  RETURN_IF_ERROR(CheckWindow(h, o.window, o.kernel, o.n_sink));
  if (h.decode_steps == 0) {
    return absl::InvalidArgumentError(
        "LU-KV profiling needs decode steps (the oracle looks ahead)");
  }
  LukvProfile profile;
  profile.n_layers = h.n_layers;
  profile.n_kv_heads = h.n_kv_heads;
  profile.samples.resize(1);
  for (uint32_t l = 0; l < h.n_layers; ++l) {
    TracePromptLayer p;
    RETURN_IF_ERROR(trace.ReadPromptLayer(l, &p));
    const std::vector<std::vector<double>> scores =
        GroupScores(p, h, o.window, o.kernel);
    ASSIGN_OR_RETURN(const std::vector<std::vector<double>> util,
                     OracleUtilities(trace, l, p, o));
    for (uint32_t g = 0; g < h.n_kv_heads; ++g) {
      profile.samples[0].push_back(LossCurve(h, o, scores[g], util[g]));
    }
  }
  RETURN_IF_ERROR(ValidateLukvProfile(profile));
  return profile;
}

}  // namespace kvtier
