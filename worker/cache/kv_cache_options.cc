#include "worker/cache/kv_cache_options.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/dtype.h"

namespace kvtier::worker {

absl::Status KvCacheOptions::Validate() const {
  RETURN_IF_ERROR(layout.Validate());
  if (layout.arrangement != Arrangement::kKThenV) {
    return absl::InvalidArgumentError("the page pool needs the kKThenV arrangement");
  }
  if (!kernels::IsFloatType(static_cast<kernels::ScalarType>(layout.dtype))) {
    return absl::InvalidArgumentError(
        absl::StrCat("pool dtype ", DTypeName(layout.dtype), " is not f32, f16 or bf16"));
  }
  if (digest_dtype != DType::kF32 && digest_dtype != DType::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("digest dtype ", DTypeName(digest_dtype), " is not f32 or f16"));
  }
  if (n_layers == 0 || n_layers > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("n_layers ", n_layers, " not in [1, 1024]"));
  }
  if (n_q_heads == 0 || n_q_heads % layout.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "n_q_heads ", n_q_heads, " is not a positive multiple of n_kv_heads ", layout.n_kv_heads));
  }
  if (pool_pages_per_layer == 0) {
    return absl::InvalidArgumentError("pool_pages_per_layer must be positive");
  }
  if (max_pages_per_sequence == 0) {
    return absl::InvalidArgumentError("max_pages_per_sequence must be positive");
  }
  if (max_sequences == 0) return absl::InvalidArgumentError("max_sequences must be positive");
  if (transfer_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("transfer_timeout must be positive");
  }
  if (pin_ttl_ms == 0) return absl::InvalidArgumentError("pin_ttl_ms must be positive");
  if (max_put_batch_pages == 0) {
    return absl::InvalidArgumentError("max_put_batch_pages must be positive");
  }
  return absl::OkStatus();
}

}  // namespace kvtier::worker
