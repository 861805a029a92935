// DenseLayers on the CPU: fp32, OpenBLAS, llama2.c's order of operations.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "worker/model/attention_backend.h"
#include "worker/model/blas_kernels.h"
#include "worker/model/dense_layers.h"

namespace kvtier::model {
namespace {

// llama2.c's rmsnorm, operation for operation.
void RmsNorm(float* out, const float* x, const float* weight, int size, float eps) {
  float ss = 0.0f;
  for (int j = 0; j < size; ++j) ss += x[j] * x[j];
  ss /= size;
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  for (int j = 0; j < size; ++j) out[j] = weight[j] * (ss * x[j]);
}

// out[rows] = w[rows, cols] * in[cols], as tasks on the cores
// (ParallelBlasFor): each task one single-threaded matrix-vector product
// over a run of whole kMatVecBlock-row blocks, so an output's bits do not
// depend on the split. On OpenBLAS's own threads each product waited for
// all of them: with the cores shared with another process, one thread the
// scheduler left waiting held every product up for a time slice, and a
// decode step makes hundreds of them.
constexpr int kMatVecBlock = 64;
constexpr int kMatVecTasksPerCore = 4;

void MatVec(float* out, const float* in, const float* w, int rows, int cols) {
  static const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int blocks = (rows + kMatVecBlock - 1) / kMatVecBlock;
  const int tasks = std::min(blocks, cores * kMatVecTasksPerCore);
  ParallelBlasFor(tasks, [&](size_t i) {
    const int r0 = static_cast<int>(blocks * i / tasks) * kMatVecBlock;
    const int r1 = std::min(rows, static_cast<int>(blocks * (i + 1) / tasks) * kMatVecBlock);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, r1 - r0, cols, 1.0f,
                w + static_cast<size_t>(r0) * cols, cols, in, 1, 0.0f, out + r0, 1);
  });
}

// out[n, rows] = in[n, cols] * w[rows, cols]^T, input row i being position
// pos0 + i: one BLAS call per aligned block of kPrefillRowBlock positions
// (and, for blocks of several rows, per kOutputChunk outputs), so each
// row's result is independent of n (attention_backend.h). Blocks of
// several rows and the single rows of decode (MatVec) run as tasks on the
// cores (ParallelBlasFor).
constexpr int kOutputChunk = 64;

void MatMul(float* out, const float* in, const std::vector<float>& w, int n, int rows, int cols,
            int pos0) {
  struct Task {
    int b0;  // first row of the block
    int m;   // its rows, > 1
    int r0;  // first output
    int r;   // outputs
  };
  std::vector<Task> tasks;
  // Blocks of one row: the last row of a prompt past a boundary, and the
  // first of one that starts on a block's last position.
  std::vector<int> single_rows;
  for (const PrefillRowBlock& b : PrefillRowBlocks(n, pos0)) {
    if (b.rows == 1) {
      single_rows.push_back(b.begin);
      continue;
    }
    for (int r0 = 0; r0 < rows; r0 += kOutputChunk) {
      tasks.push_back({b.begin, b.rows, r0, std::min(kOutputChunk, rows - r0)});
    }
  }
  if (!tasks.empty()) {
    ParallelBlasFor(tasks.size(), [&](size_t i) {
      const Task& t = tasks[i];
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t.m, t.r, cols, 1.0f,
                  in + static_cast<size_t>(t.b0) * cols, cols,
                  w.data() + static_cast<size_t>(t.r0) * cols, cols, 0.0f,
                  out + static_cast<size_t>(t.b0) * rows + t.r0, rows);
    });
  }
  for (int row : single_rows) {
    MatVec(out + static_cast<size_t>(row) * rows, in + static_cast<size_t>(row) * cols,
           w.data(), rows, cols);
  }
}

class CpuDenseLayers : public DenseLayers {
 public:
  CpuDenseLayers(const ModelWeights& weights, int max_batch)
      : weights_(weights), rope_freq_(weights.config.RopeFrequencies()) {
    const ModelConfig& c = weights_.config;
    const size_t b = max_batch;
    const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim;
    x_.resize(b * c.dim);
    xb_.resize(b * std::max<size_t>(c.dim, q_dim));
    hb_.resize(b * c.hidden_dim);
    hb2_.resize(b * c.hidden_dim);
    logits_.resize(c.vocab_size);
  }

  absl::Status Embed(absl::Span<const int> tokens) override {
    const int dim = weights_.config.dim;
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::memcpy(x_.data() + i * dim,
                  weights_.token_embedding.data() + static_cast<size_t>(tokens[i]) * dim,
                  dim * sizeof(float));
    }
    return absl::OkStatus();
  }

  absl::Status AttentionInputs(int layer, int n, int pos0, float* q, float* k,
                               float* v) override {
    const ModelConfig& c = weights_.config;
    const LayerWeights& lw = weights_.layers[layer];
    const int q_dim = c.n_heads * c.head_dim;
    const int kv_dim = c.kv_dim();
    for (int i = 0; i < n; ++i) {
      RmsNorm(xb_.data() + i * c.dim, x_.data() + i * c.dim, lw.rms_att.data(), c.dim,
              c.rms_eps);
    }
    MatMul(q, xb_.data(), lw.wq, n, q_dim, c.dim, pos0);
    MatMul(k, xb_.data(), lw.wk, n, kv_dim, c.dim, pos0);
    MatMul(v, xb_.data(), lw.wv, n, kv_dim, c.dim, pos0);
    for (int i = 0; i < n; ++i) {
      ApplyRope(q + i * q_dim, c.n_heads, pos0 + i);
      ApplyRope(k + i * kv_dim, c.n_kv_heads, pos0 + i);
    }
    return absl::OkStatus();
  }

  absl::Status FinishLayer(int layer, int n, int pos0, const float* att) override {
    const ModelConfig& c = weights_.config;
    const LayerWeights& lw = weights_.layers[layer];
    MatMul(xb_.data(), att, lw.wo, n, c.dim, c.n_heads * c.head_dim, pos0);
    for (size_t j = 0; j < static_cast<size_t>(n) * c.dim; ++j) x_[j] += xb_[j];
    for (int i = 0; i < n; ++i) {
      RmsNorm(xb_.data() + i * c.dim, x_.data() + i * c.dim, lw.rms_ffn.data(), c.dim,
              c.rms_eps);
    }
    MatMul(hb_.data(), xb_.data(), lw.w_gate, n, c.hidden_dim, c.dim, pos0);
    MatMul(hb2_.data(), xb_.data(), lw.w_up, n, c.hidden_dim, c.dim, pos0);
    for (size_t j = 0; j < static_cast<size_t>(n) * c.hidden_dim; ++j) {
      float val = hb_[j];
      val *= 1.0f / (1.0f + std::exp(-val));  // SiLU
      hb_[j] = val * hb2_[j];
    }
    MatMul(xb_.data(), hb_.data(), lw.w_down, n, c.dim, c.hidden_dim, pos0);
    for (size_t j = 0; j < static_cast<size_t>(n) * c.dim; ++j) x_[j] += xb_[j];
    return absl::OkStatus();
  }

  absl::StatusOr<absl::Span<const float>> Logits(int row) override {
    const ModelConfig& c = weights_.config;
    RmsNorm(xb_.data(), x_.data() + static_cast<size_t>(row) * c.dim, weights_.rms_final.data(),
            c.dim, c.rms_eps);
    MatVec(logits_.data(), xb_.data(), weights_.classifier_data(), c.vocab_size, c.dim);
    return absl::Span<const float>(logits_);
  }

 private:
  // RoPE on adjacent pairs (2i, 2i + 1) of each head's first rope_dim dims.
  void ApplyRope(float* vec, int n_heads, int pos) const {
    const int hd = weights_.config.head_dim;
    for (size_t p = 0; p < rope_freq_.size(); ++p) {
      const float val = pos * rope_freq_[p];
      const float fcr = std::cos(val);
      const float fci = std::sin(val);
      for (int h = 0; h < n_heads; ++h) {
        float* pair = vec + h * hd + 2 * p;
        const float v0 = pair[0];
        const float v1 = pair[1];
        pair[0] = v0 * fcr - v1 * fci;
        pair[1] = v0 * fci + v1 * fcr;
      }
    }
  }

  const ModelWeights& weights_;
  const std::vector<float> rope_freq_;  // [rope_dim / 2]
  // Scratch, [max_batch, width] row-major.
  std::vector<float> x_, xb_, hb_, hb2_;
  std::vector<float> logits_;
};

}  // namespace

std::unique_ptr<DenseLayers> CreateCpuDenseLayers(const ModelWeights& weights, int max_batch) {
  return std::make_unique<CpuDenseLayers>(weights, max_batch);
}

}  // namespace kvtier::model
