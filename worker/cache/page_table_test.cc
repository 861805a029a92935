// PageTable::MirrorDigests: the device copy of a layer's digests is
// brought up to date with the fewest bytes and never keeps a stale slot.
#include "worker/cache/page_table.h"

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

void ExpectMirrorEqualsDigests(const PageTable& t, const float* mirror) {
  ASSERT_NE(mirror, nullptr);
  for (size_t i = 0; i < size_t{t.n_digested} * DigestFloats(); ++i) {
    ASSERT_EQ(mirror[i], t.digests[i]) << i;
  }
}

TEST(PageTableTest, TheCpuBackendEstimatesFromTheHostDigests) {
  PageTable t;
  ASSERT_TRUE(t.AppendDigest(Page(1).data(), Layout(), kKind, DigestFloats()).ok());
  CpuDevice cpu;
  auto mirror = t.MirrorDigests(&cpu, DigestFloats());
  ASSERT_TRUE(mirror.ok());
  EXPECT_EQ(*mirror, t.digests.data());
  EXPECT_EQ(t.mirror, nullptr);
}

TEST(PageTableTest, MirrorCopiesOnlyNewDigestsAndGrowsByDoubling) {
  CountingDevice gpu;
  PageTable t;
  const size_t slot_bytes = DigestFloats() * sizeof(float);
  for (int p = 0; p < 3; ++p) {
    ASSERT_TRUE(t.AppendDigest(Page(10.0f * p).data(), Layout(), kKind, DigestFloats()).ok());
  }
  auto mirror = t.MirrorDigests(&gpu, DigestFloats());
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  ExpectMirrorEqualsDigests(t, *mirror);
  EXPECT_EQ(gpu.bytes_in, 3 * slot_bytes);
  EXPECT_EQ(gpu.allocations, 1);

  mirror = t.MirrorDigests(&gpu, DigestFloats());  // nothing new
  ASSERT_TRUE(mirror.ok());
  EXPECT_EQ(gpu.bytes_in, 3 * slot_bytes);

  for (int p = 3; p < 5; ++p) {
    ASSERT_TRUE(t.AppendDigest(Page(10.0f * p).data(), Layout(), kKind, DigestFloats()).ok());
  }
  mirror = t.MirrorDigests(&gpu, DigestFloats());
  ASSERT_TRUE(mirror.ok());
  ExpectMirrorEqualsDigests(t, *mirror);
  EXPECT_EQ(gpu.bytes_in, 5 * slot_bytes);

  // Past the first buffer's 64 slots: a buffer of twice the size, filled whole.
  for (int p = 5; p < 70; ++p) {
    ASSERT_TRUE(t.AppendDigest(Page(10.0f * p).data(), Layout(), kKind, DigestFloats()).ok());
  }
  mirror = t.MirrorDigests(&gpu, DigestFloats());
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
    ASSERT_TRUE(t.AppendDigest(page.data(), Layout(), kKind, DigestFloats()).ok());
  }
  ASSERT_TRUE(t.MirrorDigests(&gpu, DigestFloats()).ok());
  EXPECT_EQ(t.n_mirrored, 2u);

  // The last token goes: page 1 is no longer full and its digest is dropped.
  ASSERT_TRUE(t.EvictTokens(**pool, std::vector<uint32_t>{7}, 1, DigestFloats()).ok());
  EXPECT_EQ(t.n_digested, 1u);
  EXPECT_EQ(t.n_mirrored, 1u);
  // Refilled with other keys, page 1 gets another digest in the same slot.
  ASSERT_TRUE(t.AppendDigest(Page(-50.0f).data(), Layout(), kKind, DigestFloats()).ok());
  const size_t before = gpu.bytes_in;
  auto mirror = t.MirrorDigests(&gpu, DigestFloats());
  ASSERT_TRUE(mirror.ok());
  ExpectMirrorEqualsDigests(t, *mirror);
  EXPECT_EQ(gpu.bytes_in - before, DigestFloats() * sizeof(float));
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
