#include "worker/device/device.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cache/page_pool.h"

#if KVTIER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvtier::worker {
namespace {

TEST(CreateDeviceTest, CpuIsAlwaysAvailable) {
  absl::StatusOr<std::unique_ptr<Device>> d = CreateDevice("cpu");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->kind(), DeviceKind::kCpu);
}

TEST(CreateDeviceTest, RejectsUnknownSpecs) {
  for (const char* spec : {"", "gpu", "CPU", "cuda:", "cuda:-1", "cuda:x", "cudax", "cuda:1:2"}) {
    EXPECT_EQ(CreateDevice(spec).status().code(), absl::StatusCode::kInvalidArgument) << spec;
  }
}

TEST(CreateDeviceTest, CudaNeedsACudaBuildAndAGpu) {
  absl::StatusOr<std::unique_ptr<Device>> d = CreateDevice("cuda");
#if KVTIER_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable) << d.status();
  } else {
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ((*d)->kind(), DeviceKind::kCuda);
  }
#else
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition) << d.status();
  EXPECT_NE(d.status().message().find("KVTIER_CUDA=ON"), std::string::npos);
#endif
}

TEST(PagePoolSlotCopyTest, WritesAndReadsTheSlotsBytesAtAnOffset) {
  CpuDevice device;
  const PageLayout layout{.page_size = 4, .n_kv_heads = 2, .head_dim = 8, .dtype = DType::kF16};
  auto pool = *PagePool::Create(&device, layout, 3);
  EXPECT_EQ(pool->device(), &device);
  const std::vector<uint8_t> data = {1, 2, 3, 4, 5, 6, 7};
  ASSERT_TRUE(pool->WriteSlot(2, 10, data.data(), data.size()).ok());
  // The bytes land exactly there and nowhere else.
  for (int32_t s = 0; s < 3; ++s) {
    for (size_t b = 0; b < pool->page_bytes(); ++b) {
      const bool inside = s == 2 && b >= 10 && b < 17;
      EXPECT_EQ(pool->SlotData(s)[b], inside ? data[b - 10] : 0) << s << " " << b;
    }
  }
  std::vector<uint8_t> back(9, 0xFF);
  ASSERT_TRUE(pool->ReadSlot(2, 9, back.data(), back.size()).ok());
  EXPECT_EQ(back, (std::vector<uint8_t>{0, 1, 2, 3, 4, 5, 6, 7, 0}));
}

}  // namespace
}  // namespace kvtier::worker
