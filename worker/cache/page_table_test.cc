// PageTable::MirrorDigests: the device copy of a layer's digests is
// brought up to date with the fewest bytes and never keeps a stale slot.
#include "worker/cache/page_table.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier::worker {
namespace {

constexpr kernels::DigestKind kKind = kernels::DigestKind::kMinMax;

PageLayout Layout() {
  return PageLayout{.page_size = 4, .n_kv_heads = 1, .head_dim = 8, .dtype = DType::kF32};
}

size_t DigestFloats() { return kernels::DigestSlotElements(kKind, 1, 8); }

DigestFormat Format(kernels::ScalarType type = kernels::ScalarType::kF32) {
  return DigestFormat{.kind = kKind, .type = type, .slot_elements = DigestFloats()};
}

// Host memory that calls itself a GPU, counting the bytes copied to it.
class CountingDevice : public CpuDevice {
 public:
  DeviceKind kind() const override { return DeviceKind::kCuda; }
  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(size_t bytes) override {
    ++allocations;
    return CpuDevice::Allocate(bytes);
  }
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) override {
    bytes_in += bytes;
    return CpuDevice::CopyToDevice(dst, src, bytes);
  }
  size_t bytes_in = 0;
  int allocations = 0;
};

// A full page of K then V whose keys are `base + i`.
std::vector<float> Page(float base) {
  const PageLayout l = Layout();
  std::vector<float> page(2 * l.ElementsPerTensor());
  for (size_t i = 0; i < page.size(); ++i) page[i] = base + static_cast<float>(i);
  return page;
}

void ExpectMirrorEqualsDigests(const PageTable& t, const void* mirror) {
  ASSERT_NE(mirror, nullptr);
  ASSERT_EQ(t.digests.size(), size_t{t.n_digested} * Format().slot_bytes());
  EXPECT_EQ(std::memcmp(mirror, t.digests.data(), t.digests.size()), 0);
}

// fp16 digests take half the bytes and hold each fp32 bound rounded outward
// (a max up, a min down), so the min/max estimate stays an upper bound.
TEST(PageTableTest, HalfDigestsHoldTheFloatBoundsRoundedOutward) {
  PageTable f32, f16;
  std::vector<float> page = Page(0);
  for (size_t i = 0; i < page.size(); ++i) page[i] = 0.1f * static_cast<float>(i) - 1.37f;
  ASSERT_TRUE(f32.AppendDigest(page.data(), Layout(), Format()).ok());
  ASSERT_TRUE(f16.AppendDigest(page.data(), Layout(), Format(kernels::ScalarType::kF16)).ok());
  ASSERT_EQ(f32.digests.size(), DigestFloats() * sizeof(float));
  ASSERT_EQ(f16.digests.size(), DigestFloats() * sizeof(uint16_t));
  const auto* wide = reinterpret_cast<const float*>(f32.digests.data());
  const auto* half = reinterpret_cast<const uint16_t*>(f16.digests.data());
  // Slot layout (kernels/digest.h): the max vector, then the min vector.
  for (size_t c = 0; c < 8; ++c) {
    const float hi = kernels::HalfToFloat(half[c]);
    const float lo = kernels::HalfToFloat(half[8 + c]);
    EXPECT_GE(hi, wide[c]) << c;
    EXPECT_LE(lo, wide[8 + c]) << c;
    EXPECT_LT(hi - wide[c], 0.002f * std::abs(wide[c]) + 1e-6f) << c;
    EXPECT_LT(wide[8 + c] - lo, 0.002f * std::abs(wide[8 + c]) + 1e-6f) << c;
  }
}

TEST(PageTableTest, TheCpuBackendEstimatesFromTheHostDigests) {
  PageTable t;
  ASSERT_TRUE(t.AppendDigest(Page(1).data(), Layout(), Format()).ok());
  CpuDevice cpu;
  auto mirror = t.MirrorDigests(&cpu, Format().slot_bytes());
  ASSERT_TRUE(mirror.ok());
  EXPECT_EQ(*mirror, t.digests.data());
  EXPECT_EQ(t.mirror, nullptr);
}

TEST(PageTableTest, MirrorCopiesOnlyNewDigestsAndGrowsByDoubling) {
  CountingDevice gpu;
  PageTable t;
  const size_t slot_bytes = Format().slot_bytes();
  for (int p = 0; p < 3; ++p) {
    ASSERT_TRUE(t.AppendDigest(Page(10.0f * p).data(), Layout(), Format()).ok());
  }
  auto mirror = t.MirrorDigests(&gpu, Format().slot_bytes());
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  ExpectMirrorEqualsDigests(t, *mirror);
  EXPECT_EQ(gpu.bytes_in, 3 * slot_bytes);
  EXPECT_EQ(gpu.allocations, 1);

  mirror = t.MirrorDigests(&gpu, Format().slot_bytes());  // nothing new
  ASSERT_TRUE(mirror.ok());
  EXPECT_EQ(gpu.bytes_in, 3 * slot_bytes);

  for (int p = 3; p < 5; ++p) {
    ASSERT_TRUE(t.AppendDigest(Page(10.0f * p).data(), Layout(), Format()).ok());
  }
  mirror = t.MirrorDigests(&gpu, Format().slot_bytes());
  ASSERT_TRUE(mirror.ok());
  ExpectMirrorEqualsDigests(t, *mirror);
  EXPECT_EQ(gpu.bytes_in, 5 * slot_bytes);

  // Past the first buffer's 64 slots: a buffer of twice the size, filled whole.
  for (int p = 5; p < 70; ++p) {
    ASSERT_TRUE(t.AppendDigest(Page(10.0f * p).data(), Layout(), Format()).ok());
  }
  mirror = t.MirrorDigests(&gpu, Format().slot_bytes());
  ASSERT_TRUE(mirror.ok());
  ExpectMirrorEqualsDigests(t, *mirror);
  EXPECT_EQ(gpu.allocations, 2);
  EXPECT_EQ(t.mirror->bytes(), 128 * slot_bytes);
  EXPECT_EQ(gpu.bytes_in, (5 + 70) * slot_bytes);
}

TEST(PageTableTest, DigestsDroppedByTokenEvictionAreCopiedAgainWhenRedigested) {
  CountingDevice gpu;
  auto pool = PagePool::Create(&gpu, Layout(), 4);
  ASSERT_TRUE(pool.ok()) << pool.status();
  PageTable t;
  t.budget_pages = 4;
  ASSERT_TRUE((*pool)->Reserve(4).ok());
  for (int p = 0; p < 2; ++p) {
    auto slot = (*pool)->Allocate();
    ASSERT_TRUE(slot.ok());
    const std::vector<float> page = Page(100.0f * p);
    ASSERT_TRUE((*pool)->WriteSlot(*slot, 0, page.data(), page.size() * sizeof(float)).ok());
    t.states.push_back(PageState::kResident);
    t.slots.push_back(*slot);
    t.checksums.push_back(0);
    t.puts.push_back(0);
    ++t.slots_held;
    t.n_tokens += Layout().page_size;
    ASSERT_TRUE(t.AppendDigest(page.data(), Layout(), Format()).ok());
  }
  ASSERT_TRUE(t.MirrorDigests(&gpu, Format().slot_bytes()).ok());
  EXPECT_EQ(t.n_mirrored, 2u);

  // The last token goes: page 1 is no longer full and its digest is dropped.
  ASSERT_TRUE(t.EvictTokens(**pool, std::vector<uint32_t>{7}, 1, Format().slot_bytes()).ok());
  EXPECT_EQ(t.n_digested, 1u);
  EXPECT_EQ(t.n_mirrored, 1u);
  // Refilled with other keys, page 1 gets another digest in the same slot.
  ASSERT_TRUE(t.AppendDigest(Page(-50.0f).data(), Layout(), Format()).ok());
  const size_t before = gpu.bytes_in;
  auto mirror = t.MirrorDigests(&gpu, Format().slot_bytes());
  ASSERT_TRUE(mirror.ok());
  ExpectMirrorEqualsDigests(t, *mirror);
  EXPECT_EQ(gpu.bytes_in - before, Format().slot_bytes());
}

TEST(PageTableTest, TokenEvictionRefusesQuantizedPoolsAndChangesNothing) {
  for (DType dtype : {DType::kFp8E4M3, DType::kInt8}) {
    CountingDevice gpu;
    PageLayout layout = Layout();
    layout.dtype = dtype;
    auto pool = PagePool::Create(&gpu, layout, 2);
    ASSERT_TRUE(pool.ok()) << pool.status();
    ASSERT_TRUE((*pool)->Reserve(1).ok());
    auto slot = (*pool)->Allocate();
    ASSERT_TRUE(slot.ok());
    PageTable t;
    t.budget_pages = 2;
    t.states.push_back(PageState::kResident);
    t.slots.push_back(*slot);
    t.checksums.push_back(0);
    t.puts.push_back(0);
    t.slots_held = 1;
    t.n_tokens = layout.page_size;
    const absl::Status evicted = t.EvictTokens(**pool, std::vector<uint32_t>{1}, 1, 0);
    EXPECT_EQ(evicted.code(), absl::StatusCode::kFailedPrecondition) << evicted;
    EXPECT_EQ(t.n_tokens, layout.page_size);
    EXPECT_EQ(t.slots.size(), 1u);
    EXPECT_EQ(t.states[0], PageState::kResident);
  }
}

}  // namespace
}  // namespace kvtier::worker
