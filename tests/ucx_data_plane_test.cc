// The UCX data plane against the real kvtier-server, over shared memory and
// over TCP (UCX_TLS, set for the server process and the client alike):
// byte-exact transfers of many odd-sized pages (RAM pages sent from their
// arena slots, disk pages from their copies), a restart mid-stream, and the
// gRPC fallback giving the same results; each with staged, tagged and
// automatic put modes. Refusals and abandoned transfers:
// ucx_data_plane_hostile_test.cc.
#include <stdlib.h>

#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/data_plane.h"
#include "client/store_client.h"
#include "common/checksum.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/store.grpc.pb.h"
#include "testing/server_process.h"
#include "testing/test_pages.h"
#include "testing/ucx_test_util.h"
#include "tests/ucx_data_plane_fixture.h"

namespace kvtier::testing {
namespace {

TEST_P(UcxDataPlaneTest, ManyOddSizedPagesArriveByteExact) {
  std::unique_ptr<ServerProcess> server = Start();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);
  const OddPages pages = MakeOddPages(203, 1);

  absl::StatusOr<std::vector<client::PutOutcome>> put = client->BatchPut(pages.puts);
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_EQ(put->size(), pages.puts.size());
  for (const client::PutOutcome& o : *put) EXPECT_FALSE(o.already_present);
  // A second put of the same pages writes nothing and says so.
  put = client->BatchPut(pages.puts);
  ASSERT_TRUE(put.ok()) << put.status();
  for (const client::PutOutcome& o : *put) EXPECT_TRUE(o.already_present);

  for (uint64_t hint : {uint64_t{0}, uint64_t{238392}}) {
    absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys, hint);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), pages.keys.size());
    for (size_t i = 0; i < got->size(); ++i) {
      const client::GotPage& g = (*got)[i];
      ASSERT_EQ(g.status, v1::PAGE_STATUS_OK) << i;
      EXPECT_EQ(g.key, pages.keys[i]);
      EXPECT_EQ(g.layout, pages.puts[i].layout);
      // RAM pages go from the arena slot straight to the client.
      EXPECT_EQ(g.tier, v1::TIER_RAM) << i;
      EXPECT_EQ(g.data, pages.bytes[i]) << "page " << i;
      EXPECT_EQ(g.checksum, PageChecksum(pages.bytes[i].data(), pages.bytes[i].size()));
    }
  }
  // Every byte took the data plane, over one session: a page the server
  // sent wrong would fail the client's checksum, and the client would have
  // reconnected and fallen back to inline bytes.
  const client::DataPlaneStats stats = client->data_plane_stats();
  EXPECT_EQ(stats.sessions_opened, 1u);
  EXPECT_EQ(stats.ucx_put_pages, 2 * pages.puts.size());
  EXPECT_EQ(stats.ucx_get_pages, 2 * pages.keys.size());
  EXPECT_EQ(stats.inline_put_pages, 0u);
  EXPECT_EQ(stats.inline_get_pages, 0u);
  absl::StatusOr<v1::StatsResponse> server_stats = client->Stats();
  ASSERT_TRUE(server_stats.ok());
  EXPECT_EQ(server_stats->put_pages(), pages.puts.size());
  EXPECT_EQ(server_stats->put_duplicate_pages(), pages.puts.size());
  EXPECT_EQ(server_stats->reserved_bytes(), 0u);
}

TEST_P(UcxDataPlaneTest, RamAndDiskPagesInOneGetArriveByteExact) {
  // 1 MiB of RAM: most of the pages are demoted, so each get mixes pages
  // sent from their arena slots with pages read back from disk.
  std::unique_ptr<ServerProcess> server = Start({"--ram_bytes=1048576"});
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);
  const OddPages pages = MakeOddPages(48, 4);
  for (size_t first = 0; first < pages.puts.size(); first += 8) {
    absl::Span<const client::PutPage> batch(pages.puts.data() + first, 8);
    ASSERT_TRUE(client->BatchPut(batch).ok()) << first;
  }
  int disk_pages = 0;
  for (uint64_t hint : {uint64_t{0}, uint64_t{238392}}) {
    absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys, hint);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), pages.keys.size());
    int ram = 0, disk = 0;
    for (size_t i = 0; i < got->size(); ++i) {
      const client::GotPage& g = (*got)[i];
      ASSERT_EQ(g.status, v1::PAGE_STATUS_OK) << i;
      EXPECT_EQ(g.data, pages.bytes[i]) << "page " << i;
      (g.tier == v1::TIER_RAM ? ram : disk)++;
    }
    EXPECT_GT(ram, 0);
    EXPECT_GT(disk, 0);
    disk_pages += disk;
  }
  const client::DataPlaneStats stats = client->data_plane_stats();
  EXPECT_EQ(stats.sessions_opened, 1u);
  const client::UcxPutMode mode = std::get<1>(GetParam());
  if (std::get<0>(GetParam()) == "shm" &&
      (mode == client::UcxPutMode::kAuto || mode == client::UcxPutMode::kClientWrites)) {
    // Mapped gets of 48 keys go as messages, whose replies leave the bytes
    // of disk pages to an inline RPC.
    EXPECT_EQ(stats.message_gets, 2u);
    EXPECT_EQ(stats.inline_get_pages, static_cast<uint64_t>(disk_pages));
    EXPECT_EQ(stats.ucx_get_pages, 2 * pages.keys.size() - disk_pages);
  } else {
    EXPECT_EQ(stats.message_gets, 0u);
    EXPECT_EQ(stats.ucx_get_pages, 2 * pages.keys.size());
    EXPECT_EQ(stats.inline_get_pages, 0u);
  }
  absl::StatusOr<v1::StatsResponse> server_stats = client->Stats();
  ASSERT_TRUE(server_stats.ok());
  EXPECT_GT(server_stats->demotions(), 0u);
  EXPECT_EQ(server_stats->lost_pages(), 0u);
}

TEST_P(UcxDataPlaneTest, ClientWritesIntoTheArenaByteExact) {
  std::unique_ptr<ServerProcess> server = Start();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::StoreClient> client =
      Connect(*server, /*use_ucx=*/true, client::UcxPutMode::kClientWrites);
  ASSERT_NE(client, nullptr);
  const OddPages pages = MakeOddPages(101, 3);
  absl::StatusOr<std::vector<client::PutOutcome>> put = client->BatchPut(pages.puts);
  ASSERT_TRUE(put.ok()) << put.status();
  for (const client::PutOutcome& o : *put) EXPECT_FALSE(o.already_present);
  absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), pages.keys.size());
  for (size_t i = 0; i < got->size(); ++i) {
    ASSERT_EQ((*got)[i].status, v1::PAGE_STATUS_OK) << i;
    EXPECT_EQ((*got)[i].data, pages.bytes[i]) << "page " << i;
  }
  EXPECT_EQ(client->data_plane_stats().ucx_put_pages, pages.puts.size());
  EXPECT_EQ(client->data_plane_stats().inline_put_pages, 0u);
  // On shared memory the arena (allocated by UCX) is mapped here: the pages
  // are copied into it and out of it; over TCP they are written with
  // ucp_put_nbx and read through a region.
  const bool shm = std::get<0>(GetParam()) == "shm";
  EXPECT_EQ(client->data_plane_stats().mapped_put_pages, shm ? pages.puts.size() : 0u);
  EXPECT_EQ(client->data_plane_stats().mapped_get_pages, shm ? pages.keys.size() : 0u);
  EXPECT_EQ(client->data_plane_stats().mapped_get_retries, 0u);
  absl::StatusOr<v1::StatsResponse> stats = client->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->put_pages(), pages.puts.size());
  EXPECT_EQ(stats->reserved_bytes(), 0u);
}

TEST_P(UcxDataPlaneTest, ServerRestartMidStreamReconnectsAndNeverReturnsACorruptPage) {
  std::unique_ptr<ServerProcess> server = Start();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);

  std::atomic<bool> stop{false};
  std::atomic<int> verified{0};
  std::atomic<int> corrupt{0};
  std::thread stream([&] {
    for (uint32_t round = 10; !stop.load(); ++round) {
      const OddPages pages = MakeOddPages(16, round);
      if (!client->BatchPut(pages.puts).ok()) continue;  // server down: try the next
      absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys);
      if (!got.ok()) continue;
      for (size_t i = 0; i < got->size(); ++i) {
        const client::GotPage& g = (*got)[i];
        if (g.status != v1::PAGE_STATUS_OK) continue;  // lost with the restart
        if (g.data == pages.bytes[i]) {
          ++verified;
        } else {
          ++corrupt;
        }
      }
    }
  });
  while (verified.load() < 64) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(server->Stop().ok());
  server = Start({absl::StrCat("--listen=127.0.0.1:", port)});
  ASSERT_NE(server, nullptr);
  const int before = verified.load();
  const uint64_t sessions_before = client->data_plane_stats().sessions_opened;
  while (verified.load() < before + 64 ||
         client->data_plane_stats().sessions_opened == sessions_before) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  stop = true;
  stream.join();
  EXPECT_EQ(corrupt.load(), 0);
  // A new session carried the pages after the restart.
  const client::DataPlaneStats stats = client->data_plane_stats();
  EXPECT_GE(stats.sessions_opened, 2u);
  const OddPages after = MakeOddPages(8, 999999);
  const uint64_t ucx_before = client->data_plane_stats().ucx_put_pages;
  ASSERT_TRUE(client->BatchPut(after.puts).ok());
  EXPECT_EQ(client->data_plane_stats().ucx_put_pages, ucx_before + after.puts.size());
}

TEST_P(UcxDataPlaneTest, WithoutUcxTheSameOperationsGiveTheSameResults) {
  // The same sequence against a UCX server with a UCX client, the same
  // server with an inline client, and a server without a data plane.
  struct Run {
    std::vector<std::string> server_args;
    bool use_ucx;
  };
  const std::vector<Run> runs = {{{}, true}, {{}, false}, {{"--noucx"}, true}};
  std::vector<std::string> transcripts;
  for (const Run& run : runs) {
    TempDir dir;
    std::vector<std::string> args = run.server_args;
    args.push_back("--data_dir=" + dir.path() + "/data");
    args.push_back("--trusted_local_clients");
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, dir.path());
    ASSERT_TRUE(server.ok()) << server.status();
    std::unique_ptr<client::StoreClient> client = Connect(**server, run.use_ucx);
    ASSERT_NE(client, nullptr);
    const OddPages a = MakeOddPages(40, 7);
    const OddPages b = MakeOddPages(60, 7);  // a's 40 pages and 20 more
    std::string t;
    for (const OddPages* p : {&a, &b}) {
      absl::StatusOr<std::vector<client::PutOutcome>> put = client->BatchPut(p->puts);
      ASSERT_TRUE(put.ok()) << put.status();
      for (const client::PutOutcome& o : *put) t += o.already_present ? 'P' : 'n';
    }
    // A page whose bytes do not match its layout: the same refusal.
    std::vector<client::PutPage> bad = {a.puts[0]};
    bad[0].data = bad[0].data.subspan(1);
    t += absl::StrCat("|", client->BatchPut(bad).status().code(), "|");
    std::vector<PageKey> keys = b.keys;
    keys.push_back(MakeOddPages(61, 8).keys.back());  // never stored
    absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(keys);
    ASSERT_TRUE(got.ok()) << got.status();
    for (const client::GotPage& g : *got) {
      t += absl::StrCat(g.status, ":", g.tier, ":", g.checksum, ":", g.data.size(), ";");
      if (g.status == v1::PAGE_STATUS_OK) {
        const size_t i = &g - got->data();
        EXPECT_EQ(g.data, b.bytes[i]);
      }
    }
    absl::StatusOr<v1::StatsResponse> stats = client->Stats();
    ASSERT_TRUE(stats.ok());
    t += absl::StrCat("|", stats->put_pages(), ",", stats->put_duplicate_pages(), ",",
                      stats->reserved_bytes(), ",", stats->ram().pages());
    const client::DataPlaneStats dp = client->data_plane_stats();
    const bool ucx_expected = run.use_ucx && run.server_args.empty();
    EXPECT_EQ(dp.ucx_put_pages > 0, ucx_expected);
    EXPECT_EQ(dp.inline_get_pages == 0, ucx_expected);
    transcripts.push_back(t);
  }
  EXPECT_EQ(transcripts[0], transcripts[1]);
  EXPECT_EQ(transcripts[0], transcripts[2]);
}

// kAuto over TCP keeps bytes inline (AutoKeepsBytesInlineOverTcp), so the
// data-plane scenarios run it on shared memory only.
INSTANTIATE_TEST_SUITE_P(
    Transports, UcxDataPlaneTest,
    ::testing::Values(Param{"shm", client::UcxPutMode::kServerReads},
                      Param{"shm", client::UcxPutMode::kClientWrites},
                      Param{"shm", client::UcxPutMode::kTagged},
                      Param{"shm", client::UcxPutMode::kAuto},
                      Param{"tcp", client::UcxPutMode::kServerReads},
                      Param{"tcp", client::UcxPutMode::kTagged}),
    [](const ::testing::TestParamInfo<Param>& info) {
      switch (std::get<1>(info.param)) {
        case client::UcxPutMode::kTagged:
          return std::get<0>(info.param) + "_tagged";
        case client::UcxPutMode::kAuto:
          return std::get<0>(info.param) + "_auto";
        case client::UcxPutMode::kClientWrites:
          return std::get<0>(info.param) + "_client_writes";
        default:
          return std::get<0>(info.param) + "_staged";
      }
    });

}  // namespace
}  // namespace kvtier::testing
