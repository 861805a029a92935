// Test helpers of kernels/: random pages in every storage type and double
// precision references. Header-only; used by the CPU and CUDA tests.
#ifndef KVTIER_KERNELS_TESTING_TEST_UTIL_H_
#define KVTIER_KERNELS_TESTING_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/dtype.h"

namespace kvtier::kernels::testing {

// A typed buffer: `values` are the exact fp32 values the stored bits encode.
struct TypedBuffer {
  ScalarType type = ScalarType::kF32;
  std::vector<uint8_t> bytes;
  std::vector<float> values;

  const void* data() const { return bytes.data(); }
  void* data() { return bytes.data(); }
};

// Rounds `v` to `type` (kF32, kF16, kBF16) and keeps the rounded values.
inline TypedBuffer MakeTyped(const std::vector<float>& v, ScalarType type) {
  TypedBuffer b;
  b.type = type;
  b.bytes.resize(v.size() * ScalarBytes(type));
  b.values.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    StoreFromFloat(b.bytes.data(), type, i, v[i]);
    b.values[i] = LoadAsFloat(b.bytes.data(), type, i);
  }
  return b;
}

inline std::vector<float> RandomFloats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Random values with outliers: mostly N(0,1), some exactly +-outlier, some
// N(0,1) clamped to +-1 times outlier, a few exact zeros; every value is finite and at
// most max(|N(0,1)|, outlier) in magnitude.
inline std::vector<float> AdversarialFloats(size_t n, uint32_t seed, float outlier) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const int r = pick(rng);
    if (r < 5) {
      v[i] = 0.0f;
    } else if (r < 10) {
      v[i] = outlier * (r % 2 ? 1.0f : -1.0f);
    } else if (r < 20) {
      v[i] = std::clamp(dist(rng), -1.0f, 1.0f) * outlier;
    } else {
      v[i] = dist(rng);
    }
  }
  return v;
}

// Dense reference attention of one query head over `n` keys/values
// ([n][head_dim], row stride `stride`) in double.
inline void ReferenceAttention(const float* q, const float* const* k, const float* const* v,
                               size_t n, size_t head_dim, double scale, double* out, double* lse) {
  std::vector<double> logits(n);
  double m = -INFINITY;
  for (size_t t = 0; t < n; ++t) {
    double s = 0;
    for (size_t c = 0; c < head_dim; ++c) s += double{q[c]} * k[t][c];
    logits[t] = s * scale;
    m = std::max(m, logits[t]);
  }
  double sum = 0;
  for (size_t c = 0; c < head_dim; ++c) out[c] = 0;
  for (size_t t = 0; t < n; ++t) {
    const double w = std::exp(logits[t] - m);
    sum += w;
    for (size_t c = 0; c < head_dim; ++c) out[c] += w * v[t][c];
  }
  for (size_t c = 0; c < head_dim; ++c) out[c] /= sum;
  *lse = m + std::log(sum);
}

}  // namespace kvtier::kernels::testing

#endif  // KVTIER_KERNELS_TESTING_TEST_UTIL_H_
