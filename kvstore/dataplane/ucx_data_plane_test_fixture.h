// The fixture of UcxDataPlane's in-process tests (ucx_data_plane_test.cc:
// sessions and options; ucx_data_plane_transfers_test.cc: put transfers and
// the arena): a real TieredStore, a data plane over it that trusts its
// clients with the arena, and a client worker of this process.
#ifndef KVTIER_KVSTORE_DATAPLANE_UCX_DATA_PLANE_TEST_FIXTURE_H_
#define KVTIER_KVSTORE_DATAPLANE_UCX_DATA_PLANE_TEST_FIXTURE_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "gtest/gtest.h"
#include "kvstore/core/store.h"
#include "kvstore/dataplane/ucx_data_plane.h"
#include "testing/store_test_util.h"
#include "ucx/context.h"
#include "ucx/worker.h"

namespace kvtier::store {

class UcxDataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.data_dir = dir_.path();
    options.ram.capacity_bytes = 1 << 20;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  // These tests drive the arena's own paths: clients are trusted with it.
  std::unique_ptr<UcxDataPlane> Create(DataPlaneOptions options = {}) {
    options.address_probe = KVTIER_UCX_PROBE_PATH;
    options.expose_arena = true;
    absl::StatusOr<std::unique_ptr<UcxDataPlane>> plane =
        UcxDataPlane::Create(store_.get(), options);
    EXPECT_TRUE(plane.ok()) << plane.status();
    return plane.ok() ? std::move(*plane) : nullptr;
  }

  // A session whose client is a worker of this process: the whole reply
  // (an empty one, with the failure recorded, when Open fails).
  UcxDataPlane::OpenReply OpenSession(UcxDataPlane& plane) {
    absl::StatusOr<UcxDataPlane::OpenReply> reply = plane.Open(client_worker_->address());
    EXPECT_TRUE(reply.ok()) << reply.status();
    if (!reply.ok()) return UcxDataPlane::OpenReply();
    EXPECT_FALSE(reply->session_id.IsZero());
    EXPECT_EQ(reply->arena_address, reinterpret_cast<uint64_t>(store_->RamRegion().data()));
    EXPECT_EQ(reply->arena_bytes, store_->RamRegion().size());
    EXPECT_FALSE(reply->arena_rkey.empty());
    EXPECT_FALSE(reply->worker_address.empty());
    return *std::move(reply);
  }
  // Its session id.
  UcxDataPlane::SessionId Open(UcxDataPlane& plane) { return OpenSession(plane).session_id; }

  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ucx::UcxContext> client_context_ = *ucx::UcxContext::Create(ucx::UcxOptions{});
  std::unique_ptr<ucx::UcxWorker> client_worker_ = *ucx::UcxWorker::Create(*client_context_);
  // Answers the wireup of the server's endpoint (Open waits for it), as a
  // real client's progress thread does.
  ucx::UcxProgressThread client_progress_{client_worker_.get()};
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_DATAPLANE_UCX_DATA_PLANE_TEST_FIXTURE_H_
