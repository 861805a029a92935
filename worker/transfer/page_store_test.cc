// PageStoreBackend::GetInto as every backend without a faster way has it:
// pages land in their destinations only when whole and intact.
#include "worker/transfer/page_store.h"

#include <string>
#include <vector>

#include "common/checksum.h"
#include "gtest/gtest.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::worker {
namespace {

StoredPage Page(uint64_t id, char fill) {
  StoredPage page;
  page.key = PageKey{.hash = Hash128{.hi = 1, .lo = id}, .layer = 0};
  page.layout = PageLayout{.page_size = 2, .n_kv_heads = 1, .head_dim = 4, .dtype = DType::kF32};
  page.bytes.assign(page.layout.PageBytes(), fill);
  for (size_t i = 0; i < page.bytes.size(); ++i) page.bytes[i] = static_cast<char>(fill + i);
  page.checksum = PageChecksum(page.bytes.data(), page.bytes.size());
  return page;
}

PageDestination Halves(std::string& buffer) {
  auto* at = reinterpret_cast<uint8_t*>(buffer.data());
  const size_t half = buffer.size() / 2;
  PageDestination d;
  d.pieces = {absl::MakeSpan(at, half), absl::MakeSpan(at + half, buffer.size() - half)};
  return d;
}

TEST(PageStoreGetIntoTest, WholeIntactPagesLandTheOthersComeAsBytes) {
  InProcessPageStore store;
  const std::vector<StoredPage> pages = {Page(1, 'a'), Page(2, 'b'), Page(3, 'c')};
  ASSERT_TRUE(store.Put(pages).ok());
  // Page 2's stored bytes are damaged; page 3's destination is a byte short.
  std::string damaged = pages[1].bytes;
  damaged[5] ^= 1;
  ASSERT_TRUE(store.Corrupt(pages[1].key, damaged).ok());
  const size_t size = pages[0].bytes.size();
  std::vector<std::string> buffers = {std::string(size, '-'), std::string(size, '-'),
                                      std::string(size - 1, '-')};
  std::vector<PageDestination> places;
  for (std::string& b : buffers) places.push_back(Halves(b));
  const PageKey missing{.hash = Hash128{.hi = 1, .lo = 9}, .layer = 0};
  std::string spare(size, '-');
  places.push_back(Halves(spare));
  const std::vector<PageKey> keys = {pages[0].key, pages[1].key, pages[2].key, missing};

  absl::StatusOr<std::vector<FetchedPage>> got = store.GetInto(keys, places);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 4u);
  EXPECT_TRUE((*got)[0].in_destination);
  EXPECT_TRUE((*got)[0].bytes.empty());
  EXPECT_EQ(buffers[0], pages[0].bytes);
  // The damaged page stays in `bytes`, where the caller's check sees it.
  EXPECT_FALSE((*got)[1].in_destination);
  EXPECT_EQ((*got)[1].bytes, damaged);
  EXPECT_FALSE((*got)[2].in_destination);
  EXPECT_EQ((*got)[2].bytes, pages[2].bytes);
  EXPECT_EQ(buffers[2], std::string(size - 1, '-'));
  EXPECT_EQ((*got)[3].status, FetchStatus::kNotFound);
  EXPECT_FALSE((*got)[3].in_destination);
  EXPECT_EQ(spare, std::string(size, '-'));

  // No destinations: a plain get. A count that does not match the keys:
  // refused before anything is read.
  got = store.GetInto(keys, {});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].bytes, pages[0].bytes);
  EXPECT_EQ(store.GetInto(keys, absl::MakeSpan(places).subspan(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::worker
