// DenseLayers on a GPU: fp32 weights copied there once, projections with
// cuBLAS (fp32, no TF32), and small kernels for the embedding lookup,
// RMSNorm, RoPE, SwiGLU and the residual adds. Q/K/V go to the host and
// the attention output comes back once per layer (dense_layers.h). Memory,
// uploads and the stream are a worker::CudaDevice's.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "worker/device/cuda_device.h"
#include "worker/model/dense_layers.h"

namespace kvtier::model {
namespace {

using kernels::CudaStatus;
using kernels::LastLaunchStatus;

// The one conversion of cuBLAS errors in kvtier.
absl::Status CublasStatus(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": cuBLAS status ", static_cast<int>(st));
  if (st == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  if (st == CUBLAS_STATUS_NOT_INITIALIZED) return absl::UnavailableError(msg);
  if (st == CUBLAS_STATUS_INVALID_VALUE) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

constexpr int kThreads = 256;

__global__ void EmbedKernel(float* x, const float* table, const int* tokens, int dim) {
  const float* row = table + static_cast<size_t>(tokens[blockIdx.x]) * dim;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) x[size_t{blockIdx.x} * dim + j] = row[j];
}

// Row r: out = w * (x / sqrt(mean(x^2) + eps)), as llama2.c computes it.
__global__ void RmsNormKernel(float* out, const float* x, const float* w, int dim, float eps) {
  __shared__ float partial[kThreads / 32];
  const float* row = x + size_t{blockIdx.x} * dim;
  float ss = 0.0f;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += row[j] * row[j];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < kThreads / 32; ++i) total += partial[i];
  const float scale = 1.0f / sqrtf(total / dim + eps);
  for (int j = threadIdx.x; j < dim; j += blockDim.x) {
    out[size_t{blockIdx.x} * dim + j] = w[j] * (scale * row[j]);
  }
}

// Block (row, head): thread p rotates pair (2p, 2p + 1) by pos * freq[p].
__global__ void RopeKernel(float* vec, int n_heads, int head_dim, int pairs, const float* freq,
                           int pos0) {
  const int row = blockIdx.x / n_heads, head = blockIdx.x % n_heads;
  float* h = vec + (static_cast<size_t>(row) * n_heads + head) * head_dim;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const float val = static_cast<float>(pos0 + row) * freq[p];
    const float fcr = cosf(val), fci = sinf(val);
    const float v0 = h[2 * p], v1 = h[2 * p + 1];
    h[2 * p] = v0 * fcr - v1 * fci;
    h[2 * p + 1] = v0 * fci + v1 * fcr;
  }
}

__global__ void SwiGluKernel(float* gate, const float* up, size_t n) {
  for (size_t j = blockIdx.x * size_t{blockDim.x} + threadIdx.x; j < n;
       j += size_t{gridDim.x} * blockDim.x) {
    const float g = gate[j];
    gate[j] = g * (1.0f / (1.0f + expf(-g))) * up[j];
  }
}

__global__ void AddKernel(float* x, const float* y, size_t n) {
  for (size_t j = blockIdx.x * size_t{blockDim.x} + threadIdx.x; j < n;
       j += size_t{gridDim.x} * blockDim.x) {
    x[j] += y[j];
  }
}

unsigned Blocks(size_t n) { return static_cast<unsigned>(std::min<size_t>((n + 255) / 256, 4096)); }

using Buffer = std::unique_ptr<worker::DeviceBuffer>;

float* Floats(const Buffer& b) { return static_cast<float*>(b->data()); }

struct LayerBuffers {
  Buffer rms_att, wq, wk, wv, wo, rms_ffn, w_gate, w_up, w_down;
};

class CudaDenseLayers : public DenseLayers {
 public:
  CudaDenseLayers(const ModelWeights& weights, int max_batch)
      : weights_(weights), max_batch_(max_batch), layers_(weights.config.n_layers) {}
  ~CudaDenseLayers() override {
    if (handle_ != nullptr) cublasDestroy(handle_);
  }

  absl::Status Init(int ordinal) {
    const ModelConfig& c = weights_.config;
    ASSIGN_OR_RETURN(device_, worker::CudaDevice::Create(ordinal));
    RETURN_IF_ERROR(device_->Select());
    stream_ = device_->stream();
    RETURN_IF_ERROR(CublasStatus(cublasCreate(&handle_), "cublasCreate"));
    RETURN_IF_ERROR(CublasStatus(cublasSetStream(handle_, stream_), "cublasSetStream"));
    // Plain fp32 products, as the CPU computes them (no TF32).
    RETURN_IF_ERROR(
        CublasStatus(cublasSetMathMode(handle_, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode"));
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = weights_.layers[l];
      LayerBuffers& d = layers_[l];
      for (auto [buf, host] : {std::pair{&d.rms_att, &w.rms_att}, {&d.wq, &w.wq}, {&d.wk, &w.wk},
                               {&d.wv, &w.wv}, {&d.wo, &w.wo}, {&d.rms_ffn, &w.rms_ffn},
                               {&d.w_gate, &w.w_gate}, {&d.w_up, &w.w_up},
                               {&d.w_down, &w.w_down}}) {
        ASSIGN_OR_RETURN(*buf, Upload(*host));
      }
    }
    ASSIGN_OR_RETURN(embedding_, Upload(weights_.token_embedding));
    ASSIGN_OR_RETURN(rms_final_, Upload(weights_.rms_final));
    if (!weights_.classifier.empty()) {
      ASSIGN_OR_RETURN(classifier_, Upload(weights_.classifier));
    }
    ASSIGN_OR_RETURN(rope_freq_, Upload(c.RopeFrequencies()));
    const size_t b = max_batch_;
    const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim;
    for (auto [buf, floats] : {std::pair{&x_, b * c.dim},
                               {&xb_, b * std::max<size_t>(c.dim, q_dim)},
                               {&q_, b * q_dim},
                               {&k_, b * c.kv_dim()},
                               {&v_, b * c.kv_dim()},
                               {&hb_, b * c.hidden_dim},
                               {&hb2_, b * c.hidden_dim},
                               {&logits_, size_t(c.vocab_size)}}) {
      ASSIGN_OR_RETURN(*buf, device_->Allocate(floats * sizeof(float)));
    }
    ASSIGN_OR_RETURN(tokens_, device_->Allocate(b * sizeof(int)));
    host_logits_.resize(c.vocab_size);
    return absl::OkStatus();
  }

  absl::Status Embed(absl::Span<const int> tokens) override {
    const int n = static_cast<int>(tokens.size());
    RETURN_IF_ERROR(device_->Select());
    int* ids = static_cast<int*>(tokens_->data());
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(ids, tokens.data(), n * sizeof(int), cudaMemcpyHostToDevice, stream_),
        "cudaMemcpyAsync (tokens)"));
    EmbedKernel<<<n, kThreads, 0, stream_>>>(Floats(x_), Floats(embedding_), ids,
                                             weights_.config.dim);
    return LastLaunchStatus("EmbedKernel");
  }

  absl::Status AttentionInputs(int layer, int n, int pos0, float* q, float* k,
                               float* v) override {
    const ModelConfig& c = weights_.config;
    const LayerBuffers& w = layers_[layer];
    const int q_dim = c.n_heads * c.head_dim, kv_dim = c.kv_dim();
    RETURN_IF_ERROR(device_->Select());
    RmsNormKernel<<<n, kThreads, 0, stream_>>>(Floats(xb_), Floats(x_), Floats(w.rms_att), c.dim,
                                                c.rms_eps);
    RETURN_IF_ERROR(LastLaunchStatus("RmsNormKernel"));
    RETURN_IF_ERROR(MatMul(Floats(q_), Floats(xb_), Floats(w.wq), n, q_dim, c.dim));
    RETURN_IF_ERROR(MatMul(Floats(k_), Floats(xb_), Floats(w.wk), n, kv_dim, c.dim));
    RETURN_IF_ERROR(MatMul(Floats(v_), Floats(xb_), Floats(w.wv), n, kv_dim, c.dim));
    const int pairs = c.rope_dim / 2;
    RopeKernel<<<n * c.n_heads, 64, 0, stream_>>>(Floats(q_), c.n_heads, c.head_dim, pairs,
                                                  Floats(rope_freq_), pos0);
    RopeKernel<<<n * c.n_kv_heads, 64, 0, stream_>>>(Floats(k_), c.n_kv_heads, c.head_dim, pairs,
                                                     Floats(rope_freq_), pos0);
    RETURN_IF_ERROR(LastLaunchStatus("RopeKernel"));
    RETURN_IF_ERROR(ToHost(q, Floats(q_), static_cast<size_t>(n) * q_dim));
    RETURN_IF_ERROR(ToHost(k, Floats(k_), static_cast<size_t>(n) * kv_dim));
    RETURN_IF_ERROR(ToHost(v, Floats(v_), static_cast<size_t>(n) * kv_dim));
    return Sync();
  }

  absl::Status FinishLayer(int layer, int n, int pos0, const float* att) override {
    (void)pos0;  // cuBLAS results are not batch-invariant anyway
    const ModelConfig& c = weights_.config;
    const LayerBuffers& w = layers_[layer];
    const int q_dim = c.n_heads * c.head_dim;
    const size_t rows = static_cast<size_t>(n);
    RETURN_IF_ERROR(device_->Select());
    RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(Floats(q_), att, rows * q_dim * sizeof(float),
                                                      cudaMemcpyHostToDevice, stream_),
                                      "cudaMemcpyAsync (attention output)"));
    RETURN_IF_ERROR(MatMul(Floats(xb_), Floats(q_), Floats(w.wo), n, c.dim, q_dim));
    AddKernel<<<Blocks(rows * c.dim), 256, 0, stream_>>>(Floats(x_), Floats(xb_), rows * c.dim);
    RmsNormKernel<<<n, kThreads, 0, stream_>>>(Floats(xb_), Floats(x_), Floats(w.rms_ffn), c.dim,
                                                c.rms_eps);
    RETURN_IF_ERROR(LastLaunchStatus("RmsNormKernel"));
    RETURN_IF_ERROR(MatMul(Floats(hb_), Floats(xb_), Floats(w.w_gate), n, c.hidden_dim, c.dim));
    RETURN_IF_ERROR(MatMul(Floats(hb2_), Floats(xb_), Floats(w.w_up), n, c.hidden_dim, c.dim));
    SwiGluKernel<<<Blocks(rows * c.hidden_dim), 256, 0, stream_>>>(Floats(hb_), Floats(hb2_),
                                                                   rows * c.hidden_dim);
    RETURN_IF_ERROR(LastLaunchStatus("SwiGluKernel"));
    RETURN_IF_ERROR(MatMul(Floats(xb_), Floats(hb_), Floats(w.w_down), n, c.dim, c.hidden_dim));
    AddKernel<<<Blocks(rows * c.dim), 256, 0, stream_>>>(Floats(x_), Floats(xb_), rows * c.dim);
    return LastLaunchStatus("AddKernel");
  }

  absl::StatusOr<absl::Span<const float>> Logits(int row) override {
    const ModelConfig& c = weights_.config;
    RETURN_IF_ERROR(device_->Select());
    RmsNormKernel<<<1, kThreads, 0, stream_>>>(
        Floats(xb_), Floats(x_) + static_cast<size_t>(row) * c.dim, Floats(rms_final_), c.dim,
        c.rms_eps);
    RETURN_IF_ERROR(LastLaunchStatus("RmsNormKernel"));
    const float* cls = weights_.classifier.empty() ? Floats(embedding_) : Floats(classifier_);
    RETURN_IF_ERROR(MatMul(Floats(logits_), Floats(xb_), cls, 1, c.vocab_size, c.dim));
    RETURN_IF_ERROR(ToHost(host_logits_.data(), Floats(logits_), host_logits_.size()));
    RETURN_IF_ERROR(Sync());
    return absl::Span<const float>(host_logits_);
  }

 private:
  // out[n][rows] = in[n][cols] * w[rows][cols]^T, all row-major: in cuBLAS's
  // column-major terms out^T = op_T(w^T) * in^T.
  absl::Status MatMul(float* out, const float* in, const float* w, int n, int rows, int cols) {
    const float one = 1.0f, zero = 0.0f;
    return CublasStatus(cublasSgemm(handle_, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &one, w,
                                    cols, in, cols, &zero, out, rows),
                        "cublasSgemm");
  }
  absl::Status ToHost(float* dst, const float* src, size_t floats) {
    return CudaStatus(
        cudaMemcpyAsync(dst, src, floats * sizeof(float), cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync (to host)");
  }
  absl::Status Sync() { return device_->Synchronize(); }
  absl::StatusOr<Buffer> Upload(const std::vector<float>& host) {
    ASSIGN_OR_RETURN(Buffer buf, device_->Allocate(host.size() * sizeof(float)));
    RETURN_IF_ERROR(device_->CopyToDevice(buf->data(), host.data(), host.size() * sizeof(float)));
    return buf;
  }

  const ModelWeights& weights_;
  const int max_batch_;
  // Declared first: the buffers below free their memory on it.
  std::unique_ptr<worker::CudaDevice> device_;
  cudaStream_t stream_ = nullptr;  // the device's
  cublasHandle_t handle_ = nullptr;
  std::vector<LayerBuffers> layers_;
  Buffer embedding_, rms_final_, classifier_, rope_freq_;
  Buffer x_, xb_, q_, k_, v_, hb_, hb2_, logits_;
  Buffer tokens_;  // int32 ids of the batch
  std::vector<float> host_logits_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DenseLayers>> CreateCudaDenseLayers(const ModelWeights& weights,
                                                                   int max_batch, int ordinal) {
  auto dense = std::make_unique<CudaDenseLayers>(weights, max_batch);
  absl::Status st = dense->Init(ordinal);
  if (!st.ok()) return st;
  return std::unique_ptr<DenseLayers>(std::move(dense));
}

}  // namespace kvtier::model
