// Helpers of the UCX data-plane integration suites (ucx_data_plane_test,
// ucx_auto_client_test): odd-sized pages, and a data-plane session opened
// by hand, as a misbehaving client (or a test that needs the session's raw
// pieces) would.
#ifndef KVTIER_TESTING_UCX_TEST_UTIL_H_
#define KVTIER_TESTING_UCX_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/data_plane.h"
#include "client/store_client.h"
#include "common/absl_cycle_clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvtier/v1/store.grpc.pb.h"
#include "testing/test_pages.h"

namespace kvtier::testing {

// Layouts whose byte counts are not multiples of anything convenient.
inline std::vector<PageLayout> OddLayouts() {
  return {
      PageLayout{.page_size = 3, .n_kv_heads = 1, .head_dim = 5, .dtype = DType::kF32},    // 120
      PageLayout{.page_size = 7, .n_kv_heads = 3, .head_dim = 11, .dtype = DType::kF16},   // 924
      PageLayout{.page_size = 13, .n_kv_heads = 5, .head_dim = 97, .dtype = DType::kBF16}, // 25220
      PageLayout{.page_size = 33, .n_kv_heads = 7, .head_dim = 129, .dtype = DType::kF32}, // 238392
  };
}

struct OddPages {
  std::vector<client::PutPage> puts;
  std::vector<PageKey> keys;
  std::vector<std::string> bytes;
};

// n pages cycling through OddLayouts(); `prompt` varies the keys.
inline OddPages MakeOddPages(int n, uint32_t prompt) {
  OddPages p;
  const std::vector<PageLayout> layouts = OddLayouts();
  p.bytes.reserve(n);
  for (int i = 0; i < n; ++i) {
    const PageLayout& layout = layouts[i % layouts.size()];
    const PageKey key{.hash = PromptChain(layout, 1, prompt * 100000 + i)[0],
                      .layer = static_cast<uint32_t>(i)};
    p.keys.push_back(key);
    p.bytes.push_back(PageBytes(layout, key));
  }
  for (int i = 0; i < n; ++i) {
    p.puts.push_back(client::PutPage{
        .key = p.keys[i], .layout = layouts[i % layouts.size()],
        .data = {reinterpret_cast<const uint8_t*>(p.bytes[i].data()), p.bytes[i].size()}});
  }
  return p;
}

// A data-plane session opened by hand, as a client that then misbehaves
// (or a test that needs the session's raw pieces) would. Fatal failures
// (ASSERT_NO_FATAL_FAILURE) when it cannot be opened.
struct RawSession {
  std::unique_ptr<client::ClientDataPlane> plane;
  std::unique_ptr<v1::KvStore::Stub> stub;
  v1::OpenDataPlaneResponse opened;
  std::shared_ptr<const client::ClientDataPlane::Connection> connection;
};

inline void OpenRawSession(const std::string& target, RawSession* raw) {
  absl::StatusOr<std::unique_ptr<client::ClientDataPlane>> plane =
      client::ClientDataPlane::Create(ucx::UcxOptions{});
  ASSERT_TRUE(plane.ok()) << plane.status();
  raw->plane = *std::move(plane);
  InitAbslCycleClock();
  raw->stub = v1::KvStore::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::OpenDataPlaneRequest open;
  open.set_client_worker_address(raw->plane->worker_address());
  ASSERT_TRUE(raw->stub->OpenDataPlane(&context, open, &raw->opened).ok());
  absl::StatusOr<std::shared_ptr<const client::ClientDataPlane::Connection>> connection =
      raw->plane->Attach(raw->opened);
  ASSERT_TRUE(connection.ok()) << connection.status();
  raw->connection = *std::move(connection);
}

}  // namespace kvtier::testing

#endif  // KVTIER_TESTING_UCX_TEST_UTIL_H_
