#include "worker/model/dense_layers.h"

#include "worker/device/device.h"

namespace kvtier::model {

absl::StatusOr<std::unique_ptr<DenseLayers>> CreateDenseLayers(std::string_view device,
                                                               const ModelWeights& weights,
                                                               int max_batch) {
  absl::StatusOr<worker::DeviceSpec> spec = worker::ParseDeviceSpec(device);
  if (!spec.ok()) return spec.status();
  if (spec->kind == worker::DeviceKind::kCpu) return CreateCpuDenseLayers(weights, max_batch);
#if KVTIER_WITH_CUDA
  return CreateCudaDenseLayers(weights, max_batch, spec->ordinal);
#else
  return absl::InternalError("a CUDA device spec in a build without CUDA");
#endif
}

}  // namespace kvtier::model
