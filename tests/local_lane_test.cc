// Local lanes between the real kvtier-server and StoreClient: page bytes of
// a same-host client move through memory of its own (no address, key or
// mapping of server memory), for its tenant only, and every failure falls
// back to the other paths without losing a page.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "absl/time/clock.h"
#include "client/local_lane.h"
#include "client/store_client.h"
#include "common/checksum.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "kvstore/access/access_table.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/local_lane.h"
#include "kvtier/v1/store.grpc.pb.h"
#include "testing/cross_memory.h"
#include "testing/server_process.h"
#include "testing/ucx_test_util.h"

namespace kvtier::testing {
namespace {

constexpr char kAcme[] = "acme-token-0123456789abcdef";
constexpr char kGlobex[] = "globex-token-0123456789abcdef";

std::string Line(const std::string& tenant, const std::string& token,
                 const std::string& shared = "none") {
  return absl::StrCat("tenant=", tenant, " role=tenant token_sha256=", access::HashToken(token),
                      " shared=", shared, "\n");
}

class LocalLaneTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--data_dir=" + dir_.path() + "/data",
                                     "--ram_bytes=33554432"};
    args.insert(args.end(), extra.begin(), extra.end());
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(args, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  std::unique_ptr<client::StoreClient> Client(client::ClientOptions options = {}) {
    options.deadline_ms = 10'000;
    options.local_segment_bytes = uint64_t{1} << 20;  // several batches per chunk
    absl::StatusOr<std::unique_ptr<client::StoreClient>> c =
        client::StoreClient::Connect(server_->target(), options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // Puts `pages` and reads them back byte-exact.
  static void RoundTrip(client::StoreClient& c, const OddPages& pages) {
    ASSERT_TRUE(c.BatchPut(pages.puts).ok());
    absl::StatusOr<std::vector<client::GotPage>> got = c.BatchGet(pages.keys);
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < pages.keys.size(); ++i) {
      ASSERT_EQ((*got)[i].status, v1::PAGE_STATUS_OK) << i;
      EXPECT_EQ((*got)[i].data, pages.bytes[i]) << i;
    }
  }

  void WriteAccess(const std::string& text) {
    std::ofstream(access_path_, std::ios::trunc) << text;
  }

  void AwaitLog(const std::string& text) { ASSERT_TRUE(server_->AwaitStderr(text).ok()) << text; }

  TempDir dir_;
  const std::string access_path_ = dir_.path() + "/access.txt";
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(LocalLaneTest, TheDefaultServerMovesSameHostPagesThroughLanes) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::unique_ptr<client::StoreClient> c = Client();
  // 40 pages of odd sizes: more than one segment's worth per chunk.
  const OddPages pages = MakeOddPages(40, 1);
  ASSERT_NO_FATAL_FAILURE(RoundTrip(*c, pages));
  const client::DataPlaneStats stats = c->data_plane_stats();
  EXPECT_EQ(stats.lanes_opened, 1u);
  EXPECT_EQ(stats.lane_put_pages, 40u);
  EXPECT_EQ(stats.lane_get_pages, 40u);
  EXPECT_EQ(stats.inline_put_pages + stats.inline_get_pages, 0u);
  EXPECT_EQ(stats.ucx_put_pages + stats.ucx_get_pages + stats.sessions_opened, 0u);
  // Puts of stored pages say so, as on every path.
  absl::StatusOr<std::vector<client::PutOutcome>> again = c->BatchPut(pages.puts);
  ASSERT_TRUE(again.ok());
  for (const client::PutOutcome& o : *again) EXPECT_TRUE(o.already_present);
}

TEST_F(LocalLaneTest, APageLargerThanTheSegmentGoesInline) {
  ASSERT_NO_FATAL_FAILURE(Start());
  client::ClientOptions options;
  options.local_direct_transfers = false;  // through the segment
  std::unique_ptr<client::StoreClient> c = Client(options);
  const PageLayout big{.page_size = 128, .n_kv_heads = 16, .head_dim = 128, .dtype = DType::kF32};
  ASSERT_GT(big.PageBytes(), uint64_t{1} << 20);
  const std::string bytes(big.PageBytes(), 'b');
  OddPages pages = MakeOddPages(3, 2);
  const PageKey key{.hash = {.hi = 9, .lo = 9}, .layer = 0};
  pages.puts.push_back({.key = key, .layout = big,
                        .data = {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}});
  pages.keys.push_back(key);
  pages.bytes.push_back(bytes);
  ASSERT_NO_FATAL_FAILURE(RoundTrip(*c, pages));
  const client::DataPlaneStats stats = c->data_plane_stats();
  EXPECT_EQ(stats.lane_put_pages, 3u);
  EXPECT_EQ(stats.inline_put_pages, 1u);
  // The server sends what does not fit the segment inline in the reply.
  EXPECT_EQ(stats.lane_get_pages, 4u);
}

TEST_F(LocalLaneTest, ClientsFallBackWhereThereAreNoLanes) {
  ASSERT_NO_FATAL_FAILURE(Start({"--nolocal_lanes", "--noucx"}));
  std::unique_ptr<client::StoreClient> c = Client();
  ASSERT_NO_FATAL_FAILURE(RoundTrip(*c, MakeOddPages(5, 3)));
  const client::DataPlaneStats stats = c->data_plane_stats();
  EXPECT_EQ(stats.lanes_opened, 0u);
  EXPECT_EQ(stats.inline_put_pages, 5u);
  EXPECT_EQ(stats.inline_get_pages, 5u);
  EXPECT_NE(server_->StderrText().find("local lanes off"), std::string::npos);
}

TEST_F(LocalLaneTest, TrustedClientsUseTheMappedArenaInstead) {
  ASSERT_NO_FATAL_FAILURE(Start({"--trusted_local_clients", "--prefault_ram"}));
  std::unique_ptr<client::StoreClient> c = Client();
  ASSERT_NO_FATAL_FAILURE(RoundTrip(*c, MakeOddPages(5, 4)));
  const client::DataPlaneStats stats = c->data_plane_stats();
  EXPECT_EQ(stats.lanes_opened, 0u);
  EXPECT_EQ(stats.lane_put_pages + stats.lane_get_pages, 0u);
}

// Every page came back OK, and in its destination exactly when it was
// copied out of shared memory and its destination (all but the last,
// whose destination is a byte too long) has its size.
void ExpectLandedAllButTheLast(const std::vector<client::GotPage>& got, bool shared_memory) {
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].status, v1::PAGE_STATUS_OK) << i;
    EXPECT_EQ(got[i].in_destination, shared_memory && i + 1 < got.size()) << i;
    if (got[i].in_destination) {
      EXPECT_TRUE(got[i].data.empty()) << i;
    }
  }
}

// BatchGet with destinations: pages copied out of shared memory land in
// the caller's buffers; others, and buffers of another size, come as data.
void GetsInto(client::StoreClient& c, const OddPages& pages, bool shared_memory) {
  ASSERT_TRUE(c.BatchPut(pages.puts).ok());
  std::vector<std::string> buffers;
  for (const std::string& bytes : pages.bytes) buffers.emplace_back(bytes.size(), '\0');
  buffers.back().resize(buffers.back().size() + 1);  // one buffer of the wrong size
  std::vector<absl::Span<uint8_t>> destinations;
  for (std::string& b : buffers) {
    destinations.emplace_back(reinterpret_cast<uint8_t*>(b.data()), b.size());
  }
  absl::StatusOr<std::vector<client::GotPage>> got = c.BatchGet(pages.keys, 0, destinations);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), pages.keys.size());
  ASSERT_NO_FATAL_FAILURE(ExpectLandedAllButTheLast(*got, shared_memory));
  for (size_t i = 0; i < got->size(); ++i) {
    const client::GotPage& page = (*got)[i];
    EXPECT_EQ(page.in_destination ? buffers[i] : page.data, pages.bytes[i]) << i;
  }
  EXPECT_EQ(c.BatchGet(pages.keys, 0, absl::MakeSpan(destinations).subspan(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Likewise with each destination split in pieces (a page's K and V halves
// in two arrays, say): a page whose size is the pieces' total fills them in
// order, without a byte written around them; one whose pieces add up to a
// byte too many comes as data and leaves them as they were.
void GetsIntoPieces(client::StoreClient& c, const OddPages& pages, bool shared_memory) {
  ASSERT_TRUE(c.BatchPut(pages.puts).ok());
  constexpr char kUntouched = '\x5a';
  // Per page three pieces (a third, one byte, the rest), each in a buffer
  // of its own with a guard byte either side.
  std::vector<std::array<std::string, 3>> buffers(pages.keys.size());
  std::vector<PageDestination> destinations(pages.keys.size());
  for (size_t i = 0; i < pages.keys.size(); ++i) {
    const size_t size = pages.bytes[i].size() + (i + 1 == pages.keys.size() ? 1 : 0);
    const size_t cut[3] = {size / 3, 1, size - size / 3 - 1};
    for (int j = 0; j < 3; ++j) {
      buffers[i][j].assign(cut[j] + 2, kUntouched);
      destinations[i].pieces.push_back(
          absl::MakeSpan(reinterpret_cast<uint8_t*>(buffers[i][j].data()) + 1, cut[j]));
    }
  }
  absl::StatusOr<std::vector<client::GotPage>> got =
      c.BatchGet(pages.keys, 0, absl::MakeConstSpan(destinations));
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), pages.keys.size());
  ASSERT_NO_FATAL_FAILURE(ExpectLandedAllButTheLast(*got, shared_memory));
  for (size_t i = 0; i < got->size(); ++i) {
    const client::GotPage& page = (*got)[i];
    std::string landed;
    for (const std::string& b : buffers[i]) {
      EXPECT_EQ(b.front(), kUntouched) << i;
      EXPECT_EQ(b.back(), kUntouched) << i;
      landed += b.substr(1, b.size() - 2);
    }
    if (page.in_destination) {
      EXPECT_EQ(landed, pages.bytes[i]) << i;
    } else {
      EXPECT_EQ(page.data, pages.bytes[i]) << i;
      EXPECT_EQ(landed, std::string(landed.size(), kUntouched)) << i;
    }
  }
}

TEST_F(LocalLaneTest, GetsThroughALaneLandInTheCallersBuffers) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // Through the segment, and written there by the server directly.
  for (const bool direct : {false, true}) {
    // A segment that holds the whole batch: what does not fit would come inline.
    absl::StatusOr<std::unique_ptr<client::StoreClient>> c = client::StoreClient::Connect(
        server_->target(), {.deadline_ms = 10'000,
                            .local_segment_bytes = uint64_t{64} << 20,
                            .local_direct_transfers = direct});
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_NO_FATAL_FAILURE(GetsInto(**c, MakeOddPages(30, direct ? 17 : 7),
                                     /*shared_memory=*/true));
    const client::DataPlaneStats stats = (*c)->data_plane_stats();
    EXPECT_EQ(stats.lane_get_pages, 30u);
    // All but the page whose buffer is a byte too long; puts go through
    // the segment unless asked otherwise.
    EXPECT_EQ(stats.lane_direct_get_pages, direct && CrossMemoryAttachWorks() ? 29u : 0u);
    EXPECT_EQ(stats.lane_direct_put_pages, 0u);
    // Split destinations come through the segment whether or not the lane
    // has direct transfers: the server writes no piece of this process.
    ASSERT_NO_FATAL_FAILURE(GetsIntoPieces(**c, MakeOddPages(20, direct ? 19 : 11),
                                           /*shared_memory=*/true));
    EXPECT_EQ((*c)->data_plane_stats().lane_get_pages, 50u);
    EXPECT_EQ((*c)->data_plane_stats().lane_direct_get_pages,
              direct && CrossMemoryAttachWorks() ? 29u : 0u);
  }
}

TEST_F(LocalLaneTest, GetsOutOfAMappedArenaLandInTheCallersBuffers) {
  ASSERT_NO_FATAL_FAILURE(Start({"--trusted_local_clients", "--prefault_ram"}));
  std::unique_ptr<client::StoreClient> c = Client();
  ASSERT_NO_FATAL_FAILURE(GetsInto(*c, MakeOddPages(12, 8), /*shared_memory=*/true));
  EXPECT_EQ(c->data_plane_stats().mapped_get_pages, 12u);
  ASSERT_NO_FATAL_FAILURE(GetsIntoPieces(*c, MakeOddPages(5, 12), /*shared_memory=*/true));
  EXPECT_EQ(c->data_plane_stats().mapped_get_pages, 17u);
}

TEST_F(LocalLaneTest, InlineGetsComeAsDataBesideDestinations) {
  ASSERT_NO_FATAL_FAILURE(Start({"--nolocal_lanes", "--noucx"}));
  std::unique_ptr<client::StoreClient> c = Client();
  ASSERT_NO_FATAL_FAILURE(GetsInto(*c, MakeOddPages(6, 9), /*shared_memory=*/false));
  ASSERT_NO_FATAL_FAILURE(GetsIntoPieces(*c, MakeOddPages(6, 10), /*shared_memory=*/false));
}

TEST_F(LocalLaneTest, ALaneActsForItsTenantOnly) {
  WriteAccess(Line("acme", kAcme) + Line("globex", kGlobex, "read"));
  ASSERT_NO_FATAL_FAILURE(Start({"--access_file=" + access_path_}));
  client::ClientOptions acme_options;
  acme_options.token = kAcme;
  std::unique_ptr<client::StoreClient> acme = Client(acme_options);
  client::ClientOptions globex_options;
  globex_options.token = kGlobex;
  std::unique_ptr<client::StoreClient> globex = Client(globex_options);
  const OddPages pages = MakeOddPages(4, 5);
  ASSERT_NO_FATAL_FAILURE(RoundTrip(*acme, pages));
  // globex asks for acme's keys through its own lane: absent, as any key
  // it never stored.
  absl::StatusOr<std::vector<client::GotPage>> got = globex->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (const client::GotPage& page : *got) EXPECT_EQ(page.status, v1::PAGE_STATUS_NOT_FOUND);
  EXPECT_EQ(globex->data_plane_stats().lane_get_pages, 4u);
  // Its own pages under the same keys are its own.
  OddPages mine = MakeOddPages(4, 5);
  for (std::string& bytes : mine.bytes) std::fill(bytes.begin(), bytes.end(), 'g');
  for (size_t i = 0; i < mine.puts.size(); ++i) {
    mine.puts[i].data = {reinterpret_cast<const uint8_t*>(mine.bytes[i].data()),
                         mine.bytes[i].size()};
  }
  ASSERT_NO_FATAL_FAILURE(RoundTrip(*globex, mine));
  ASSERT_NO_FATAL_FAILURE(RoundTrip(*acme, pages));

  // With read rights only on the shared namespace, a lane reads it and
  // cannot write it: the same answer as an RPC's.
  globex_options.shared_namespace = true;
  std::unique_ptr<client::StoreClient> shared_reader = Client(globex_options);
  EXPECT_EQ(shared_reader->BatchPut(pages.puts).status().code(),
            absl::StatusCode::kPermissionDenied);
  got = shared_reader->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].status, v1::PAGE_STATUS_NOT_FOUND);
  EXPECT_EQ(shared_reader->data_plane_stats().lane_get_pages, 4u);
}

TEST_F(LocalLaneTest, ReloadingTheAccessFileClosesLanesOfRevokedCredentials) {
  WriteAccess(Line("acme", kAcme) + Line("globex", kGlobex));
  ASSERT_NO_FATAL_FAILURE(Start({"--access_file=" + access_path_}));
  client::ClientOptions options;
  options.token = kGlobex;
  options.max_attempts = 1;
  std::unique_ptr<client::StoreClient> globex = Client(options);
  const OddPages pages = MakeOddPages(2, 6);
  ASSERT_TRUE(globex->BatchPut(pages.puts).ok());
  ASSERT_EQ(globex->data_plane_stats().lane_put_pages, 2u);
  WriteAccess(Line("acme", kAcme));
  ASSERT_TRUE(server_->Signal(SIGHUP).ok());
  ASSERT_NO_FATAL_FAILURE(AwaitLog("access file reloaded"));
  // The open lane is gone with the credential it was opened with.
  EXPECT_EQ(globex->BatchGet(pages.keys).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(globex->data_plane_stats().lane_get_pages, 0u);
}

TEST_F(LocalLaneTest, ARestartedServerGetsANewLane) {
  ASSERT_NO_FATAL_FAILURE(Start());
  client::ClientOptions options;
  options.ucx_reopen_interval_ms = 10;
  std::unique_ptr<client::StoreClient> c = Client(options);
  ASSERT_NO_FATAL_FAILURE(RoundTrip(*c, MakeOddPages(3, 7)));
  // Same port, same directory: the lane the client holds is dead.
  const int port = server_->port();
  ASSERT_TRUE(server_->Stop().ok());
  server_.reset();
  ASSERT_NO_FATAL_FAILURE(Start({"--listen=127.0.0.1:" + std::to_string(port)}));
  // The dead lane fails; the put goes through a fresh one.
  ASSERT_NO_FATAL_FAILURE(RoundTrip(*c, MakeOddPages(3, 8)));
  const client::DataPlaneStats stats = c->data_plane_stats();
  EXPECT_EQ(stats.lanes_opened, 2u);
  EXPECT_EQ(stats.lane_put_pages, 6u);
  EXPECT_EQ(stats.inline_put_pages, 0u);
}

TEST_F(LocalLaneTest, DirectTransfersMovePagesBetweenTheClientsOwnBuffersAndTheStore) {
  if (!CrossMemoryAttachWorks()) GTEST_SKIP() << "this host refuses cross-memory attach";
  ASSERT_NO_FATAL_FAILURE(Start());
  client::ClientOptions options;
  options.local_direct_puts = true;
  std::unique_ptr<client::StoreClient> c = Client(options);  // segments of 1 MiB
  // Odd pages and one larger than the whole segment: all go directly.
  OddPages pages = MakeOddPages(40, 21);
  const PageLayout big{.page_size = 128, .n_kv_heads = 16, .head_dim = 128, .dtype = DType::kF32};
  const std::string bytes(big.PageBytes(), 'B');
  const PageKey key{.hash = {.hi = 21, .lo = 21}, .layer = 0};
  pages.puts.push_back({.key = key, .layout = big,
                        .data = {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}});
  pages.keys.push_back(key);
  pages.bytes.push_back(bytes);
  ASSERT_TRUE(c->BatchPut(pages.puts).ok());
  client::DataPlaneStats stats = c->data_plane_stats();
  EXPECT_EQ(stats.lane_direct_put_pages, 41u);
  EXPECT_EQ(stats.inline_put_pages, 0u);
  // Into the caller's buffers; without them (a size hint only) the pages
  // are not written directly into fresh buffers.
  std::vector<std::string> buffers;
  std::vector<absl::Span<uint8_t>> destinations;
  for (const std::string& b : pages.bytes) buffers.emplace_back(b.size(), '\0');
  for (std::string& b : buffers) {
    destinations.emplace_back(reinterpret_cast<uint8_t*>(b.data()), b.size());
  }
  absl::StatusOr<std::vector<client::GotPage>> got = c->BatchGet(pages.keys, 0, destinations);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < pages.keys.size(); ++i) {
    ASSERT_EQ((*got)[i].status, v1::PAGE_STATUS_OK) << i;
    EXPECT_TRUE((*got)[i].in_destination) << i;
    EXPECT_EQ(buffers[i], pages.bytes[i]) << i;
  }
  const std::vector<PageKey> big_keys = {key, key};  // twice: each its own copy
  got = c->BatchGet(big_keys, big.PageBytes());
  ASSERT_TRUE(got.ok()) << got.status();
  for (const client::GotPage& page : *got) {
    EXPECT_FALSE(page.in_destination);
    EXPECT_EQ(page.data, bytes);
  }
  stats = c->data_plane_stats();
  EXPECT_EQ(stats.lane_direct_get_pages, 41u);
  EXPECT_EQ(stats.lane_direct_get_retries, 0u);
  // Larger than the segment, they came in the lane's reply.
  EXPECT_EQ(stats.lane_get_pages, 43u);
  EXPECT_EQ(stats.inline_get_pages, 0u);
  // A page that is not stored leaves its buffer as it was.
  std::string untouched(64, 'u');
  const absl::Span<uint8_t> one(reinterpret_cast<uint8_t*>(untouched.data()), untouched.size());
  const PageKey absent{.hash = {.hi = 22, .lo = 22}, .layer = 0};
  got = c->BatchGet({&absent, 1}, 0, {&one, 1});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].status, v1::PAGE_STATUS_NOT_FOUND);
  EXPECT_EQ(untouched, std::string(64, 'u'));
}

// A lane opened by hand, to send what a StoreClient never would.
class RawLaneTest : public LocalLaneTest {
 protected:
  std::unique_ptr<client::LocalLane> OpenLane(bool offer_direct) {
    auto stub = v1::KvStore::NewStub(
        grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    v1::OpenLocalLaneResponse response;
    const grpc::Status status = stub->OpenLocalLane(&context, {}, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    absl::StatusOr<std::unique_ptr<client::LocalLane>> lane = client::LocalLane::Open(
        {.socket_name = response.socket_name(),
         .ticket = response.ticket(),
         .server_proof = response.server_proof()},
        uint64_t{1} << 20, absl::Seconds(10), offer_direct);
    EXPECT_TRUE(lane.ok()) << lane.status();
    return lane.ok() ? *std::move(lane) : nullptr;
  }

  // A direct put of `pages` with each page's address and checksum as given.
  static v1::BatchPutRequest DirectPut(const OddPages& pages,
                                       const std::vector<uint64_t>& addresses) {
    v1::BatchPutRequest request;
    for (size_t i = 0; i < pages.puts.size(); ++i) {
      v1::PutPage* wire = request.add_pages();
      v1::KeyToProto(pages.keys[i], wire->mutable_key());
      v1::LayoutToProto(pages.puts[i].layout, wire->mutable_layout());
      wire->set_checksum(PageChecksum(pages.bytes[i].data(), pages.bytes[i].size()));
      wire->set_client_address(addresses[i]);
    }
    return request;
  }

  // How many of `keys` the server holds (a plain client's get).
  int Stored(const std::vector<PageKey>& keys) {
    std::unique_ptr<client::StoreClient> c = Client();
    absl::StatusOr<std::vector<client::GotPage>> got = c->BatchGet(keys);
    EXPECT_TRUE(got.ok()) << got.status();
    int n = 0;
    for (const client::GotPage& page : got.value_or(std::vector<client::GotPage>())) {
      n += page.status == v1::PAGE_STATUS_OK;
    }
    return n;
  }
};

uint64_t AddressOf(const std::string& bytes) { return reinterpret_cast<uintptr_t>(bytes.data()); }

TEST_F(RawLaneTest, BadDirectPutsAreRefusedAndStoreNothing) {
  if (!CrossMemoryAttachWorks()) GTEST_SKIP() << "this host refuses cross-memory attach";
  ASSERT_NO_FATAL_FAILURE(Start());
  std::unique_ptr<client::LocalLane> lane = OpenLane(/*offer_direct=*/true);
  ASSERT_NE(lane, nullptr);
  ASSERT_TRUE(lane->direct());
  const absl::Duration timeout = absl::Seconds(10);
  const OddPages pages = MakeOddPages(3, 23);
  const std::vector<uint64_t> good = {AddressOf(pages.bytes[0]), AddressOf(pages.bytes[1]),
                                      AddressOf(pages.bytes[2])};
  // The second page's address is not mapped in this process.
  std::vector<uint64_t> addresses = good;
  addresses[1] = 4096;
  EXPECT_EQ(lane->Call(wire::kLanePutOp, DirectPut(pages, addresses), timeout).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The third page's bytes are not those its checksum names.
  addresses = good;
  addresses[2] = AddressOf(pages.bytes[0]);
  EXPECT_EQ(lane->Call(wire::kLanePutOp, DirectPut(pages, addresses), timeout).status().code(),
            absl::StatusCode::kDataLoss);
  // Some pages by address, others in the segment.
  v1::BatchPutRequest mixed = DirectPut(pages, good);
  mixed.mutable_pages(0)->set_client_address(0);
  EXPECT_EQ(lane->Call(wire::kLanePutOp, mixed, timeout).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Stored(pages.keys), 0);
  EXPECT_FALSE(lane->broken());  // each error is that request's
  ASSERT_TRUE(lane->Call(wire::kLanePutOp, DirectPut(pages, good), timeout).ok());
  EXPECT_EQ(Stored(pages.keys), 3);

  // A lane that did not offer direct transfers has none.
  std::unique_ptr<client::LocalLane> plain = OpenLane(/*offer_direct=*/false);
  ASSERT_NE(plain, nullptr);
  EXPECT_FALSE(plain->direct());
  EXPECT_EQ(plain->Call(wire::kLanePutOp, DirectPut(pages, good), timeout).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(RawLaneTest, BadDirectGetsAreRefused) {
  if (!CrossMemoryAttachWorks()) GTEST_SKIP() << "this host refuses cross-memory attach";
  ASSERT_NO_FATAL_FAILURE(Start());
  std::unique_ptr<client::StoreClient> c = Client();
  const OddPages pages = MakeOddPages(2, 24);
  ASSERT_TRUE(c->BatchPut(pages.puts).ok());
  std::unique_ptr<client::LocalLane> lane = OpenLane(/*offer_direct=*/true);
  ASSERT_NE(lane, nullptr);
  const absl::Duration timeout = absl::Seconds(10);
  std::string buffer(pages.bytes[0].size(), '\0');
  v1::BatchGetRequest request;
  for (const PageKey& key : pages.keys) v1::KeyToProto(key, request.add_keys());
  v1::ClientBuffer* into = request.add_lane_destinations();
  into->set_address(AddressOf(buffer));
  into->set_bytes(buffer.size());
  // One destination for two keys.
  EXPECT_EQ(lane->Call(wire::kLaneGetOp, request, timeout).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A destination this process does not map.
  v1::ClientBuffer* nowhere = request.add_lane_destinations();
  nowhere->set_address(4096);
  nowhere->set_bytes(pages.bytes[1].size());
  EXPECT_EQ(lane->Call(wire::kLaneGetOp, request, timeout).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Both where they belong: the bytes arrive, and the reply says so.
  std::string second(pages.bytes[1].size(), '\0');
  nowhere->set_address(AddressOf(second));
  absl::StatusOr<std::string> reply = lane->Call(wire::kLaneGetOp, request, timeout);
  ASSERT_TRUE(reply.ok()) << reply.status();
  v1::BatchGetResponse response;
  ASSERT_TRUE(response.ParseFromString(*reply));
  ASSERT_EQ(response.pages_size(), 2);
  EXPECT_TRUE(response.pages(0).in_destination());
  EXPECT_TRUE(response.pages(1).in_destination());
  EXPECT_EQ(buffer, pages.bytes[0]);
  EXPECT_EQ(second, pages.bytes[1]);
  // Not on a lane without direct transfers.
  std::unique_ptr<client::LocalLane> plain = OpenLane(/*offer_direct=*/false);
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(plain->Call(wire::kLaneGetOp, request, timeout).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// A process that binds the socket name a client was given (on a host where
// the server is not) cannot pass for the server: it lacks the proof.
TEST(LocalLaneOpenTest, APeerWithoutTheServersProofIsRefused) {
  const std::string name = absl::StrCat("kvtier-lane-test-", getpid());
  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  ASSERT_EQ(bind(listener, reinterpret_cast<const sockaddr*>(&addr), len), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  std::thread impostor([listener] {
    const int sock = accept(listener, nullptr, nullptr);
    wire::LaneHello hello;
    ASSERT_EQ(recv(sock, &hello, sizeof(hello), 0), static_cast<ssize_t>(sizeof(hello)));
    wire::LaneWelcome welcome;
    welcome.segment_bytes = uint64_t{1} << 20;
    welcome.max_frame_bytes = 1 << 20;
    std::memset(welcome.server_proof, 0x5a, sizeof(welcome.server_proof));
    ASSERT_EQ(send(sock, &welcome, sizeof(welcome), MSG_NOSIGNAL),
              static_cast<ssize_t>(sizeof(welcome)));
    close(sock);
  });
  const client::LocalLane::Grant grant{.socket_name = name,
                                       .ticket = std::string(16, 't'),
                                       .server_proof = std::string(16, 'p')};
  absl::StatusOr<std::unique_ptr<client::LocalLane>> lane =
      client::LocalLane::Open(grant, uint64_t{1} << 20, absl::Seconds(10), true);
  impostor.join();
  close(listener);
  EXPECT_EQ(lane.status().code(), absl::StatusCode::kPermissionDenied) << lane.status();
}

TEST(LocalLaneOpenTest, NoServerOnThisHostIsUnavailable) {
  const client::LocalLane::Grant grant{.socket_name = "kvtier-lane-test-nobody-listens",
                                       .ticket = std::string(16, 't'),
                                       .server_proof = std::string(16, 'p')};
  EXPECT_EQ(client::LocalLane::Open(grant, uint64_t{1} << 20, absl::Seconds(10), true)
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kvtier::testing
