// The real kvtier-server through the client: the whole page lifecycle, the
// health service, and the server's refusals to start (bad config, port in
// use).
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/store_client.h"
#include "common/checksum.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "testing/server_process.h"
#include "testing/test_pages.h"

namespace kvtier::testing {
namespace {

using ::testing::HasSubstr;

class ServerIntegrationTest : public ::testing::Test {
 protected:
  void StartServer(std::vector<std::string> args = {}) {
    args.push_back("--data_dir=" + dir_.path() + "/data");
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    auto client = client::StoreClient::Connect(server_->target(), client::ClientOptions());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(client).value();
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::StoreClient> client_;
};

TEST_F(ServerIntegrationTest, PutLookupGetPinDelete) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const PageLayout layout = SmallLayout();
  const std::vector<Hash128> chain = PromptChain(layout, 8, 1);
  const PageSet pages = MakePages(layout, chain, 2);

  absl::StatusOr<std::vector<client::PutOutcome>> put = client_->BatchPut(pages.ToPut(layout));
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_EQ(put->size(), 16u);
  for (const client::PutOutcome& o : *put) EXPECT_FALSE(o.already_present);

  // The stored prefix ends where the chain leaves what was stored.
  std::vector<Hash128> longer = chain;
  longer.push_back(PromptChain(layout, 9, 2).back());
  absl::StatusOr<client::LookupReply> lookup = client_->Lookup(longer, 0, 2);
  ASSERT_TRUE(lookup.ok()) << lookup.status();
  EXPECT_EQ(lookup->prefix_pages, 8u);
  ASSERT_EQ(lookup->tiers.size(), 18u);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(lookup->tiers[i], v1::TIER_RAM) << i;
  EXPECT_EQ(lookup->tiers[16], v1::TIER_NONE);
  EXPECT_EQ(lookup->tiers[17], v1::TIER_NONE);
  // Layer 2 was never stored.
  lookup = client_->Lookup(chain, 1, 2);
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_pages, 0u);

  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 16u);
  for (size_t i = 0; i < got->size(); ++i) {
    const client::GotPage& g = (*got)[i];
    EXPECT_EQ(g.status, v1::PAGE_STATUS_OK);
    EXPECT_EQ(g.key, pages.keys[i]);
    EXPECT_EQ(g.layout, layout);
    EXPECT_EQ(g.data, pages.bytes[i]);
    EXPECT_EQ(g.checksum, PageChecksum(pages.bytes[i].data(), pages.bytes[i].size()));
    EXPECT_EQ(g.tier, v1::TIER_RAM);
  }

  // Content-addressed: a second put writes nothing.
  put = client_->BatchPut(pages.ToPut(layout));
  ASSERT_TRUE(put.ok());
  for (const client::PutOutcome& o : *put) EXPECT_TRUE(o.already_present);

  absl::StatusOr<std::string> pin = client_->Pin({pages.keys.data(), 4}, 600'000);
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_EQ(pin->size(), 16u);
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->put_pages(), 16u);
  EXPECT_EQ(stats->put_duplicate_pages(), 16u);
  EXPECT_EQ(stats->active_pins(), 1u);
  EXPECT_EQ(stats->ram().pages(), 16u);
  EXPECT_EQ(stats->ram().pinned_pages(), 4u);

  // A pinned page is not deleted without force, and nothing else is either.
  EXPECT_EQ(client_->Delete(pages.keys).status().code(), absl::StatusCode::kFailedPrecondition);
  stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->ram().pages(), 16u);

  ASSERT_TRUE(client_->Unpin(*pin).ok());
  EXPECT_EQ(client_->Unpin(*pin).code(), absl::StatusCode::kNotFound);
  absl::StatusOr<uint32_t> deleted = client_->Delete(pages.keys);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 16u);
  deleted = client_->Delete(pages.keys);
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 0u);

  got = client_->BatchGet({pages.keys.data(), 3});
  ASSERT_TRUE(got.ok());
  for (const client::GotPage& g : *got) EXPECT_EQ(g.status, v1::PAGE_STATUS_NOT_FOUND);
  stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->ram().pages(), 0u);
  EXPECT_EQ(stats->get_misses(), 3u);
  EXPECT_EQ(stats->active_pins(), 0u);

  client_.reset();
  absl::StatusOr<ExitResult> exit = server_->Stop();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code, 0) << exit->stderr_text;
  EXPECT_THAT(exit->stderr_text, HasSubstr("kvtier-server listening"));
  EXPECT_THAT(exit->stderr_text, HasSubstr("stopped"));
}

// Eight clients on their own connections put, read back and delete their
// own prompts at the same time; every byte must come back and the counters
// must add up.
TEST_F(ServerIntegrationTest, ConcurrentClientsKeepTheirPagesIntact) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  constexpr int kClients = 8;
  constexpr int kRounds = 5;
  const PageLayout layout = SmallLayout();
  std::vector<std::string> errors(kClients);
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto client = client::StoreClient::Connect(server_->target(), client::ClientOptions());
      if (!client.ok()) {
        errors[c] = client.status().ToString();
        return;
      }
      for (int round = 0; round < kRounds; ++round) {
        const PageSet pages =
            MakePages(layout, PromptChain(layout, 4, 100 + c * kRounds + round), 2);
        auto put = (*client)->BatchPut(pages.ToPut(layout));
        auto got = (*client)->BatchGet(pages.keys);
        if (!put.ok() || !got.ok()) {
          errors[c] = absl::StrCat(put.status().ToString(), " ", got.status().ToString());
          return;
        }
        for (size_t i = 0; i < pages.keys.size(); ++i) {
          if ((*got)[i].status != v1::PAGE_STATUS_OK || (*got)[i].data != pages.bytes[i]) {
            errors[c] = absl::StrCat("round ", round, " page ", i, " differs");
            return;
          }
        }
        if (round % 2 == 0) {
          auto deleted = (*client)->Delete(pages.keys);
          if (!deleted.ok() || *deleted != pages.keys.size()) {
            errors[c] = absl::StrCat("delete: ", deleted.status().ToString());
            return;
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(errors[c], "") << "client " << c;
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  // 8 pages per round; rounds 0, 2 and 4 deleted theirs.
  EXPECT_EQ(stats->put_pages(), uint64_t{kClients} * kRounds * 8);
  EXPECT_EQ(stats->ram().pages() + stats->disk().pages(), uint64_t{kClients} * 2 * 8);
}

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

TEST_F(ServerIntegrationTest, HealthServiceReportsServing) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  auto channel = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  // HealthCheckRequest{service: ""} serializes to no bytes.
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  absl::Mutex mu;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status s) {
                   absl::MutexLock lock(&mu);
                   status = std::move(s);
                   done = true;
                 });
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&done));
  ASSERT_TRUE(status.ok()) << status.error_message();
  // HealthCheckResponse{status: SERVING (1)}: field 1, varint 1.
  EXPECT_EQ(Flatten(response), std::string("\x08\x01", 2));
}

// Reflection lists the services. Spoken as raw bytes: the reflection protos
// are not installed for C++. Request: ServerReflectionRequest{list_services:
// ""} = field 7, empty string.
TEST_F(ServerIntegrationTest, ReflectionListsTheServices) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  auto channel = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](intptr_t want) {
    ASSERT_TRUE(cq.Next(&tag, &ok));
    ASSERT_EQ(reinterpret_cast<intptr_t>(tag), want);
    ASSERT_TRUE(ok);
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_NO_FATAL_FAILURE(step(1));
  grpc::Slice request_slice(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request(&request_slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_NO_FATAL_FAILURE(step(2));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  ASSERT_NO_FATAL_FAILURE(step(3));
  call->WritesDone(reinterpret_cast<void*>(4));
  ASSERT_NO_FATAL_FAILURE(step(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  ASSERT_NO_FATAL_FAILURE(step(5));
  EXPECT_TRUE(status.ok()) << status.error_message();
  const std::string bytes = Flatten(response);
  EXPECT_THAT(bytes, HasSubstr("kvtier.v1.KvStore"));
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(ServerIntegrationTest, SigintShutsDownGracefully) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_TRUE(client_->Stats().ok());
  client_.reset();
  absl::StatusOr<ExitResult> exit = server_->Stop(absl::Seconds(60), SIGINT);
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code, 0) << exit->stderr_text;
  EXPECT_THAT(exit->stderr_text, HasSubstr("shutting down signal=2"));
  EXPECT_THAT(exit->stderr_text, HasSubstr("stopped"));
}

TEST_F(ServerIntegrationTest, MalformedConfigExitsNonZeroNamingTheProblem) {
  const std::string config = dir_.path() + "/bad.conf";
  {
    std::ofstream out(config);
    out << "listen: \"127.0.0.1:0\"\nram { capacity_bytes: 1024 high_watermark: 7 }\n";
  }
  absl::StatusOr<ExitResult> r = ServerProcess::RunToExit(
      {"--config=" + config, "--data_dir=" + dir_.path() + "/data"}, dir_.path());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->exit_code, 0);
  EXPECT_THAT(r->stderr_text, HasSubstr("ram.high_watermark 7 out of range"));

  {
    std::ofstream out(config);
    out << "listen: \"127.0.0.1:0\"\nram { capacity_bytes: lots }\n";
  }
  r = ServerProcess::RunToExit({"--config=" + config}, dir_.path());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->exit_code, 0);
  EXPECT_THAT(r->stderr_text, HasSubstr(config + ":2:"));

  r = ServerProcess::RunToExit({"--config=" + dir_.path() + "/missing.conf"}, dir_.path());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->exit_code, 0);
  EXPECT_THAT(r->stderr_text, HasSubstr("missing.conf"));
  // Nothing was created by the servers that refused to start.
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/data"));
}

TEST_F(ServerIntegrationTest, FlagOverridesConfigFile) {
  const std::string config = dir_.path() + "/ok.conf";
  {
    std::ofstream out(config);
    out << "max_batch_pages: 2\n";
  }
  ASSERT_NO_FATAL_FAILURE(StartServer({"--config=" + config, "--max_batch_pages=3"}));
  v1::BatchGetRequest request;
  for (int i = 0; i < 4; ++i) {
    v1::PageKey* key = request.add_keys();
    key->set_hash(std::string(16, static_cast<char>(i)));
  }
  auto stub = v1::KvStore::NewStub(
      grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext c4;
  v1::BatchGetResponse response;
  EXPECT_EQ(stub->BatchGet(&c4, request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  request.mutable_keys()->RemoveLast();
  grpc::ClientContext c3;
  EXPECT_TRUE(stub->BatchGet(&c3, request, &response).ok());
  EXPECT_EQ(response.pages_size(), 3);
}

TEST_F(ServerIntegrationTest, MessagesAboveMaxMessageBytesAreRefused) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max_message_bytes=4194304"}));
  client::ClientOptions options;
  options.max_message_bytes = 64 << 20;  // larger than the server's limit
  // The limit is on inline bytes; UCX and local lanes bypass it.
  options.use_ucx = false;
  options.local_lanes = false;
  auto client = client::StoreClient::Connect(server_->target(), options);
  ASSERT_TRUE(client.ok());
  // 1 MiB pages: 2 x page_size 256 x 8 heads x 128 x bf16.
  const PageLayout layout{.page_size = 256, .n_kv_heads = 8, .head_dim = 128,
                          .dtype = DType::kBF16};
  ASSERT_EQ(layout.PageBytes(), 1u << 20);
  const PageSet pages = MakePages(layout, PromptChain(layout, 5, 3), 1);
  const std::vector<client::PutPage> puts = pages.ToPut(layout);
  EXPECT_EQ((*client)->BatchPut(puts).status().code(),
            absl::StatusCode::kResourceExhausted);
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->put_pages(), 0u);
  // Within the limit, the same pages go through.
  EXPECT_TRUE((*client)->BatchPut({puts.data(), 3}).ok());
}

TEST_F(ServerIntegrationTest, PortInUseExitsNonZeroWithAClearMessage) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  TempDir other;
  absl::StatusOr<ExitResult> r = ServerProcess::RunToExit(
      {"--listen=" + server_->target(), "--data_dir=" + other.path() + "/data"}, other.path());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->exit_code, 0);
  EXPECT_THAT(r->stderr_text,
              HasSubstr(absl::StrCat("cannot listen on ", server_->target(), ": address in use")));
  // The first server still serves.
  EXPECT_TRUE(client_->Stats().ok());
}

}  // namespace
}  // namespace kvtier::testing
