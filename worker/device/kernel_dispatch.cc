#include "worker/device/kernel_dispatch.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "common/status_macros.h"
#include "kernels/decode_plan.h"
#include "kernels/dtype.h"

#if KVTIER_WITH_CUDA
#include "kernels/cuda/cuda_status.h"
#include "worker/device/cuda_device.h"
#endif

namespace kvtier::worker {

namespace {

// `*buffer` when it holds `bytes`, else a bigger one from `allocate` (the
// old one kept when that fails): at least twice the old, so that a list
// growing a page at a time reallocates (a device-wide synchronisation on
// CUDA) a logarithmic number of times.
absl::StatusOr<uint8_t*> Grow(
    std::unique_ptr<DeviceBuffer>* buffer, size_t bytes,
    absl::FunctionRef<absl::StatusOr<std::unique_ptr<DeviceBuffer>>(size_t)> allocate) {
  if (*buffer == nullptr || (*buffer)->bytes() < bytes) {
    const size_t doubled = *buffer == nullptr ? 0 : 2 * (*buffer)->bytes();
    ASSIGN_OR_RETURN(std::unique_ptr<DeviceBuffer> bigger, allocate(std::max(bytes, doubled)));
    *buffer = std::move(bigger);
  }
  return static_cast<uint8_t*>((*buffer)->data());
}

}  // namespace

absl::StatusOr<uint8_t*> KernelScratch::Reserve(size_t bytes) {
  return Grow(&buffer_, bytes, [this](size_t n) { return device_->Allocate(n); });
}

absl::StatusOr<uint8_t*> KernelScratch::ReserveHost(size_t bytes) {
#if KVTIER_WITH_CUDA
  if (device_->kind() == DeviceKind::kCuda) {
    return Grow(&host_buffer_, bytes, [this](size_t n) {
      return static_cast<CudaDevice*>(device_)->AllocatePinnedHost(n);
    });
  }
#endif
  return absl::FailedPreconditionError("pinned host staging is for CUDA devices");
}

#if KVTIER_WITH_CUDA
namespace {

CudaDevice& AsCuda(Device* device) { return *static_cast<CudaDevice*>(device); }

// Lays out the host arrays of one call in the scratch at the same offsets
// in its device memory and its pinned host mirror: Commit packs the inputs
// into the mirror and copies them in with one asynchronous copy; after the
// kernel, Finish copies the outputs' span back with one and waits for the
// stream once.
class Staging {
 public:
  explicit Staging(KernelScratch* scratch) : scratch_(scratch) {}
  // A call that failed between Commit and Finish: the mirror must not be
  // rewritten while a copy may still read it.
  ~Staging() {
    if (pending_) AsCuda(scratch_->device()).Synchronize().IgnoreError();
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  // Offsets are assigned now, pointers after Commit().
  size_t In(const void* host, size_t bytes) { return Add(host, nullptr, bytes); }
  size_t Out(void* host, size_t bytes) { return Add(nullptr, host, bytes); }
  size_t DeviceOnly(size_t bytes) { return Add(nullptr, nullptr, bytes); }

  // Reserves the scratch and its mirror, makes the device current on this
  // thread (the kernel launches that follow rely on it) and copies every
  // input in.
  absl::Status Commit() {
    CudaDevice& device = AsCuda(scratch_->device());
    ASSIGN_OR_RETURN(base_, scratch_->Reserve(total_));
    ASSIGN_OR_RETURN(host_, scratch_->ReserveHost(total_));
    size_t in_end = 0;
    for (const Region& r : regions_) {
      if (r.in == nullptr || r.bytes == 0) continue;
      std::memcpy(host_ + r.offset, r.in, r.bytes);
      in_end = std::max(in_end, r.offset + r.bytes);
    }
    RETURN_IF_ERROR(device.Select());
    pending_ = true;
    if (in_end == 0) return absl::OkStatus();
    return kernels::CudaStatus(
        cudaMemcpyAsync(base_, host_, in_end, cudaMemcpyHostToDevice, device.stream()),
        "cudaMemcpyAsync (kernel inputs)");
  }
  template <typename T>
  T* At(size_t offset) const {
    return reinterpret_cast<T*>(base_ + offset);
  }
  // Copies every output back (the copy waits for the kernel on the stream).
  absl::Status Finish() {
    CudaDevice& device = AsCuda(scratch_->device());
    size_t out_begin = total_, out_end = 0;
    for (const Region& r : regions_) {
      if (r.out == nullptr || r.bytes == 0) continue;
      out_begin = std::min(out_begin, r.offset);
      out_end = std::max(out_end, r.offset + r.bytes);
    }
    if (out_begin < out_end) {
      RETURN_IF_ERROR(kernels::CudaStatus(
          cudaMemcpyAsync(host_ + out_begin, base_ + out_begin, out_end - out_begin,
                          cudaMemcpyDeviceToHost, device.stream()),
          "cudaMemcpyAsync (kernel outputs)"));
    }
    RETURN_IF_ERROR(device.Synchronize());
    pending_ = false;
    for (const Region& r : regions_) {
      if (r.out != nullptr && r.bytes > 0) std::memcpy(r.out, host_ + r.offset, r.bytes);
    }
    return absl::OkStatus();
  }

 private:
  struct Region {
    const void* in;
    void* out;
    size_t bytes;
    size_t offset;
  };
  size_t Add(const void* in, void* out, size_t bytes) {
    constexpr size_t kAlign = 256;  // cudaMalloc's alignment, for vector loads
    const size_t offset = total_;
    regions_.push_back({in, out, bytes, offset});
    total_ += (bytes + kAlign - 1) / kAlign * kAlign;
    return offset;
  }

  KernelScratch* const scratch_;
  std::vector<Region> regions_;
  size_t total_ = 0;
  uint8_t* base_ = nullptr;
  uint8_t* host_ = nullptr;
  bool pending_ = false;
};

absl::Status DecodeAttentionOnCuda(const kernels::DecodeAttentionArgs& args,
                                   KernelScratch* scratch) {
  // The CUDA kernels trust the page lists: a bad page id or last-page length
  // would read outside the pool.
  RETURN_IF_ERROR(args.ValidateHostArrays());
  if (args.batch == 0) return absl::OkStatus();
  const kernels::PagedKv& kv = args.kv;
  CudaDevice& device = AsCuda(scratch->device());
  // The plan's CTA count is the current device's.
  RETURN_IF_ERROR(device.Select());
  const size_t lists = size_t{args.batch} * kv.n_lists();
  const size_t rows = size_t{args.batch} * args.n_q_heads;
  const size_t head_dim = kv.head_dim;
  Staging st(scratch);
  const size_t q = st.In(args.queries,
                         rows * head_dim * kernels::ScalarBytes(args.query_type));
  const size_t indptr = st.In(kv.indptr, (lists + 1) * sizeof(int32_t));
  const size_t indices = st.In(kv.indices, size_t{kv.total_entries} * sizeof(int32_t));
  const size_t last = st.In(kv.last_page_len, size_t{args.batch} * sizeof(int32_t));
  // The plan cuts long lists so that the CTAs fill the device; cuts change
  // only the summation order (kernels/decode_plan.h).
  kernels::DecodePlanOptions options;
  ASSIGN_OR_RETURN(options.target_ctas, kernels::DecodeAttentionCudaTargetCtas(args));
  ASSIGN_OR_RETURN(const kernels::DecodePlan plan, kernels::PlanDecodeAttention(args, options));
  std::vector<uint8_t> plan_bytes(plan.DeviceBytes());
  plan.Serialize(plan_bytes.data());
  const size_t plan_at = st.In(plan_bytes.data(), plan_bytes.size());
  const uint32_t group = args.n_q_heads / kv.n_kv_heads;
  const size_t work_bytes = plan.WorkspaceBytes(group, kv.head_dim);
  const size_t work = st.DeviceOnly(work_bytes);
  const size_t out = st.Out(args.out, rows * head_dim * sizeof(float));
  const size_t lse = st.Out(args.lse, rows * sizeof(float));
  RETURN_IF_ERROR(st.Commit());
  kernels::DecodeAttentionArgs d = args;
  d.queries = st.At<void>(q);
  d.kv.indptr = st.At<int32_t>(indptr);
  d.kv.indices = st.At<int32_t>(indices);
  d.kv.last_page_len = st.At<int32_t>(last);
  d.workspace = work_bytes > 0 ? st.At<void>(work) : nullptr;
  d.workspace_bytes = work_bytes;
  d.out = st.At<float>(out);
  d.lse = st.At<float>(lse);
  RETURN_IF_ERROR(kernels::DecodeAttentionCuda(d, kernels::ViewOnDevice(plan, st.At<void>(plan_at)),
                                               device.stream()));
  return st.Finish();
}

absl::Status MergeOnCuda(const kernels::MergeStatesArgs& args, KernelScratch* scratch) {
  RETURN_IF_ERROR(args.Validate());
  const size_t states = size_t{args.n_rows} * args.n_states;
  Staging st(scratch);
  const size_t so = st.In(args.states_out, states * args.head_dim * sizeof(float));
  const size_t sl = st.In(args.states_lse, states * sizeof(float));
  const size_t out = st.Out(args.out, size_t{args.n_rows} * args.head_dim * sizeof(float));
  const size_t lse = st.Out(args.lse, size_t{args.n_rows} * sizeof(float));
  RETURN_IF_ERROR(st.Commit());
  kernels::MergeStatesArgs d = args;
  d.states_out = st.At<float>(so);
  d.states_lse = st.At<float>(sl);
  d.out = st.At<float>(out);
  d.lse = st.At<float>(lse);
  RETURN_IF_ERROR(kernels::MergeAttentionStatesCuda(d, AsCuda(scratch->device()).stream()));
  return st.Finish();
}

absl::Status EstimateOnCuda(const kernels::EstimateArgs& args, KernelScratch* scratch) {
  // The kernel trusts the indptr and the slots (reads and writes by them).
  RETURN_IF_ERROR(args.ValidateHostArrays());
  if (args.batch == 0 || args.total_pages == 0) return absl::OkStatus();
  const size_t q_bytes = size_t{args.batch} * args.n_q_heads * args.head_dim *
                         kernels::ScalarBytes(args.query_type);
  Staging st(scratch);
  const size_t q = st.In(args.queries, q_bytes);
  const size_t indptr = st.In(args.page_indptr, (size_t{args.batch} + 1) * sizeof(int32_t));
  const size_t slots = st.In(args.digest_slots, size_t{args.total_pages} * sizeof(int32_t));
  const size_t scores =
      st.Out(args.scores, size_t{args.total_pages} * args.rows() * sizeof(float));
  RETURN_IF_ERROR(st.Commit());
  kernels::EstimateArgs d = args;
  d.queries = st.At<void>(q);
  d.page_indptr = st.At<int32_t>(indptr);
  d.digest_slots = st.At<int32_t>(slots);
  d.scores = st.At<float>(scores);
  RETURN_IF_ERROR(kernels::EstimateScoresCuda(d, AsCuda(scratch->device()).stream()));
  return st.Finish();
}

}  // namespace
#endif  // KVTIER_WITH_CUDA

#if !KVTIER_WITH_CUDA
namespace {

absl::Status NotBuiltWithCuda() {
  return absl::FailedPreconditionError("a CUDA device in a build without CUDA");
}

}  // namespace
#endif

absl::Status DecodeAttention(const kernels::DecodeAttentionArgs& args, KernelScratch* scratch,
                             kernels::ThreadPool* threads) {
  if (scratch->device()->kind() == DeviceKind::kCpu) {
    return kernels::DecodeAttentionCpu(args, threads);
  }
#if KVTIER_WITH_CUDA
  return DecodeAttentionOnCuda(args, scratch);
#else
  return NotBuiltWithCuda();
#endif
}

absl::Status MergeAttentionStates(const kernels::MergeStatesArgs& args, KernelScratch* scratch,
                                  kernels::ThreadPool* threads) {
  if (scratch->device()->kind() == DeviceKind::kCpu) {
    return kernels::MergeAttentionStatesCpu(args, threads);
  }
#if KVTIER_WITH_CUDA
  return MergeOnCuda(args, scratch);
#else
  return NotBuiltWithCuda();
#endif
}

absl::Status EstimateScores(const kernels::EstimateArgs& args, KernelScratch* scratch,
                            kernels::ThreadPool* threads) {
  if (scratch->device()->kind() == DeviceKind::kCpu) {
    return kernels::EstimateScoresCpu(args, threads);
  }
#if KVTIER_WITH_CUDA
  return EstimateOnCuda(args, scratch);
#else
  return NotBuiltWithCuda();
#endif
}

}  // namespace kvtier::worker
