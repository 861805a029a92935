// StoreClient: the C++ client of the kvtier store's gRPC API (kvtier.v1).
//
//   ASSIGN_OR_RETURN(std::unique_ptr<StoreClient> client,
//                    StoreClient::Connect("127.0.0.1:50051", ClientOptions()));
//   ASSIGN_OR_RETURN(auto results, client->BatchPut(pages));
//   ASSIGN_OR_RETURN(auto got, client->BatchGet(keys));
//
// Batching: requests larger than ClientOptions::max_batch_pages pages or
// max_message_bytes of page bytes are split into several RPCs, sent one
// after another. The server makes each RPC atomic, so a split request is
// atomic per chunk only: when chunk k fails, chunks before it took effect.
// Callers that need all-or-nothing keep a request within one chunk.
//
// Retries: an RPC that fails with UNAVAILABLE is retried with exponential
// backoff and jitter, up to max_attempts in all. Every RPC of this API is
// safe to repeat (pages are content-addressed) except Pin with an empty
// pin_id, which may then create a second pin; such a pin expires with its
// TTL.
// Each attempt has its own deadline (deadline_ms).
//
// Data plane: with use_ucx (the default) the client opens a UCX session on
// its first BatchPut/BatchGet (OpenDataPlane) and moves page bytes through
// UCX as ucx_put_mode says (UcxPutMode): puts are staged in a registered
// region the server reads, or written straight into the server's RAM arena
// (ReservePut, copy or ucp_put_nbx, CommitPut); gets are written by the
// server into a registered region of this client, or, with the arena
// mapped here, copied out of it by this client; small ones of either go as
// UCX messages instead of RPCs. Where UCX offers only TCP, kAuto keeps the
// bytes inline (measured faster there). The clients of one process share
// one data plane per target (ucx_share_data_plane): one UCX worker, one
// session, one mapping of the arena. The session's endpoint is reused by
// every call; when the server restarts or
// the endpoint fails, the call opens a new session and repeats the chunk
// once, then falls back to inline bytes. A server without a data plane, or
// UCX failing to start here, means inline bytes (the same results). Callers
// see no difference but speed; data_plane_stats() tells which path ran.
//
// Thread-safety: all methods are thread-safe; one client may be shared.
#ifndef KVTIER_CLIENT_STORE_CLIENT_H_
#define KVTIER_CLIENT_STORE_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/data_plane.h"
#include "client/local_lane.h"
#include "common/page_destination.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "kvtier/v1/store.grpc.pb.h"

namespace kvtier::client {

// How a BatchPut moves bytes over the data plane (kvstore/dataplane/DATA_PLANE.md).
enum class UcxPutMode {
  // By what the session's endpoint can do (measured fastest on each,
  // DATA_PLANE.md): arena mapped here (shared memory) -> kClientWrites for
  // chunks of kDirectCopyMinBytes and more, kServerReads for smaller ones;
  // TCP as UCX's only transport -> page bytes inline in gRPC, puts and
  // gets; anything else (RDMA) -> kServerReads.
  kAuto,
  // The pages are staged in a registered region of this client and the
  // server reads them into its arena within one BatchPut RPC.
  kServerReads,
  // ReservePut, then this client writes into the server's arena, then
  // CommitPut: three steps, no staging copy. Into an arena mapped here
  // each page is hashed while it is copied (its checksum goes with
  // CommitPut); otherwise ucp_put_nbx + flush.
  kClientWrites,
  // ReservePut asks the server to post a tagged receive into each slot,
  // this client sends each page as a tagged message (ucp_tag_send_nbx,
  // rendezvous for large pages: no staging copy, no emulated RMA), then
  // CommitPut waits for the receives and commits. Gets are tagged too: this
  // client posts a receive per key into its region and the server sends.
  kTagged,
};

struct ClientOptions {
  // Deadline of each RPC attempt, ms. Default 30000. Must be > 0.
  int64_t deadline_ms = 30'000;
  // Most pages or keys per RPC. Default 1024, the server's default limit.
  // Must be > 0.
  uint32_t max_batch_pages = 1024;
  // Largest message sent or received, bytes; also bounds the page bytes
  // packed into one BatchPut or expected back from one BatchGet. Default
  // 256 MiB, the server's default. Range [1 MiB, 2 GiB - 1].
  uint64_t max_message_bytes = uint64_t{256} << 20;
  // Attempts per RPC, the first included; 1 disables retries. Default 4.
  // Range [1, 100].
  int max_attempts = 4;
  // Backoff before the first retry, ms; doubles (backoff_multiplier) up to
  // max_backoff_ms. Defaults 50 and 2000. Must be > 0, initial <= max.
  int64_t initial_backoff_ms = 50;
  int64_t max_backoff_ms = 2000;
  // Default 2.0. Must be >= 1.
  double backoff_multiplier = 2.0;
  // Each backoff is scaled by a uniform factor in [1 - jitter, 1 + jitter].
  // Default 0.2. Range [0, 1].
  double jitter = 0.2;
  // Move page bytes over the UCX data plane when the server offers it.
  // Default true.
  bool use_ucx = true;
  // Default kAuto (see UcxPutMode).
  UcxPutMode ucx_put_mode = UcxPutMode::kAuto;
  // UCX writes in flight per BatchPut chunk. Default 64. Range [1, 4096].
  uint32_t ucx_window = 64;
  // Receive region of a BatchGet chunk when no page_bytes_hint is given;
  // pages beyond it come inline. Default 64 MiB. Range [1 MiB, 2 GiB].
  uint64_t ucx_region_bytes = uint64_t{64} << 20;
  // After OpenDataPlane fails, calls use inline bytes for this long before
  // trying again, twice as long after each further failure in a row (at
  // most 64 times as long: a server whose data plane cannot reach this
  // client is not asked every second). Default 1000 ms. Must be > 0.
  int64_t ucx_reopen_interval_ms = 1000;
  // Share the UCX data plane (worker, progress thread, session, arena
  // mapping) with this process's other clients of the same target: fewer
  // threads, one session, and one mapping of the arena to fault in.
  // Default true.
  bool ucx_share_data_plane = true;
  // The UCX settings of this client's data plane (ucx/context.h documents
  // each default); clients share a data plane only when these are equal.
  ucx::UcxOptions ucx{};

  // TLS, for a server with tls_cert_file (config.proto). Default false:
  // plaintext, which servers accept only on loopback addresses.
  bool tls = false;
  // CAs that sign the server's certificate (PEM); empty: the system's.
  std::string tls_ca_file{};
  // mTLS (a server with tls_client_ca_file): this client's certificate
  // chain and private key (PEM). Both or neither.
  std::string tls_cert_file{};
  std::string tls_key_file{};
  // The name the server's certificate must carry, when the target's host
  // is not it (an IP address, say). Empty: the target's host.
  std::string tls_server_name{};

  // Credentials, for a server with an access_file (config.proto): a bearer
  // token sent with every call, given as is or as a file whose first line
  // it is (so that it stays out of command lines). At most one; 16..4096
  // printable ASCII characters without spaces. Default: none (a server
  // without access_file, or mTLS with a client certificate it names).
  std::string token{};
  std::string token_file{};
  // Act on the shared namespace instead of the caller's tenant (reading
  // needs the credential's shared=read, writing shared=write). Default
  // false.
  bool shared_namespace = false;

  // Local lanes (local_lane.h): on the server's host, move page bytes
  // through memory segments of this process that the server copies into
  // and out of, when the server keeps its own memory to itself (the
  // default; a server with trusted_local_clients is used through its
  // mapped arena instead). Up to local_max_lanes lanes (one request each
  // at a time), each with a segment of local_segment_bytes (pages are sent
  // in batches that fit it; a larger page goes by the other paths). On
  // another host, or against a server without lanes, the other paths
  // serve, and opening is tried again after 1 s, doubling to 64 s.
  // With local_direct_transfers the lanes offer the server direct
  // transfers: where the kernel lets it (same user, no ptrace restriction
  // in the way), the server copies pages straight between this process's
  // buffers and its store, one copy instead of two through the segment:
  // gets into BatchGet's destinations, and with local_direct_puts also
  // puts from PutPage::data where it lies. That gives the server's process
  // access to this process's memory, which the kernel grants such a
  // process anyway. Gets without destinations and, by default, puts go
  // through the segment: with pages in cache the kernel's copy (plus, for
  // a get, zeroing a fresh buffer for it) ran slower than the two copies
  // through the segment (kvstore/dataplane/DATA_PLANE.md, "Direct
  // transfers").
  // Defaults: on, 4, 64 MiB, on, off.
  bool local_lanes = true;
  uint32_t local_max_lanes = 4;
  uint64_t local_segment_bytes = uint64_t{64} << 20;
  bool local_direct_transfers = true;
  bool local_direct_puts = false;

  // INVALID_ARGUMENT naming the first bad option.
  absl::Status Validate() const;
};

// One page to store. `data` is borrowed for the duration of the call.
struct PutPage {
  PageKey key;
  PageLayout layout;
  absl::Span<const uint8_t> data;
};

struct PutOutcome {
  bool already_present = false;
};

struct GotPage {
  PageKey key;
  v1::PageStatus status = v1::PAGE_STATUS_UNSPECIFIED;
  // Set when status is PAGE_STATUS_OK.
  PageLayout layout;
  uint64_t checksum = 0;
  v1::Tier tier = v1::TIER_NONE;
  std::string data;
  // The bytes went straight into the caller's destination (BatchGet's
  // `destinations`); `data` is empty then.
  bool in_destination = false;
};

// Which path page bytes took, counted since the client was created.
struct DataPlaneStats {
  // Sessions this client opened (a client sharing a data plane may use one
  // another client opened).
  uint64_t sessions_opened = 0;
  uint64_t ucx_put_pages = 0;
  uint64_t ucx_get_pages = 0;
  uint64_t inline_put_pages = 0;
  uint64_t inline_get_pages = 0;
  // Of ucx_put_pages, those copied straight into an arena mapped here.
  uint64_t mapped_put_pages = 0;
  // Of ucx_get_pages, those copied straight out of an arena mapped here;
  // and pages whose copy failed its checksum (the slot was reused meanwhile)
  // and were fetched again inline.
  uint64_t mapped_get_pages = 0;
  uint64_t mapped_get_retries = 0;
  // Mapped gets, and puts copied into the mapped arena, sent as UCX
  // messages instead of RPCs (a put counts once for its ReservePut and
  // CommitPut).
  uint64_t message_gets = 0;
  uint64_t message_puts = 0;
  // Local lanes opened, and pages moved through them.
  uint64_t lanes_opened = 0;
  uint64_t lane_put_pages = 0;
  uint64_t lane_get_pages = 0;
  // Of lane_put_pages and lane_get_pages, those the server copied straight
  // from or into this process's buffers (direct transfers), and direct
  // gets whose bytes failed their checksum here (fetched again by RPC).
  uint64_t lane_direct_put_pages = 0;
  uint64_t lane_direct_get_pages = 0;
  uint64_t lane_direct_get_retries = 0;
};

struct LookupReply {
  uint32_t prefix_pages = 0;
  // tiers[page * layer_count + (layer - layer_begin)].
  std::vector<v1::Tier> tiers;
};

// One WatchCacheEvents call (StoreClient::WatchCacheEvents).
//
// Thread-safety: Next and Finish from one thread; Cancel from any.
class CacheEventStream {
 public:
  CacheEventStream(std::unique_ptr<grpc::ClientContext> context,
                   std::unique_ptr<grpc::ClientReader<v1::CacheEventBatch>> reader);
  ~CacheEventStream();  // cancels a stream still open
  CacheEventStream(const CacheEventStream&) = delete;
  CacheEventStream& operator=(const CacheEventStream&) = delete;

  // Waits for the next batch; false once the stream has ended (Finish then
  // says why).
  bool Next(v1::CacheEventBatch* batch);
  // After Next returned false: the call's status (CANCELLED after Cancel,
  // UNAVAILABLE when the node stopped or could not be reached, or the
  // server's code for the request).
  absl::Status Finish();
  // Ends the stream: a Next blocked in another thread returns false.
  void Cancel();

 private:
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReader<v1::CacheEventBatch>> reader_;
  bool finished_ = false;
};

class StoreClient {
 public:
  // Validates `options` and creates a channel to `target` (host:port) with
  // its own connection (not shared with other clients). The connection is
  // made lazily by the first call.
  static absl::StatusOr<std::unique_ptr<StoreClient>> Connect(const std::string& target,
                                                              const ClientOptions& options);

  // One RPC (not split): chain.size() must be within the server's
  // max_lookup_pages. layer_count 0 means 1.
  absl::StatusOr<LookupReply> Lookup(absl::Span<const Hash128> chain, uint32_t layer_begin = 0,
                                     uint32_t layer_count = 1);

  // Computes each page's checksum and stores the pages; one outcome per
  // page, same order. INVALID_ARGUMENT (before anything is sent) for an
  // empty batch or a page larger than max_message_bytes.
  absl::StatusOr<std::vector<PutOutcome>> BatchPut(absl::Span<const PutPage> pages);

  // One result per key, same order. `page_bytes_hint` (the expected size of
  // one page, 0 if unknown) keeps each response within max_message_bytes;
  // without it, a chunk whose response is too large is split and re-sent.
  //
  // `destinations` is empty or holds one buffer per key: a page whose bytes
  // are copied out of shared memory (a local lane's segment, a mapped arena)
  // and whose size equals its buffer's is copied straight into it, saving a
  // copy (GotPage::in_destination); other pages come in GotPage::data. The
  // buffer of a page that is not returned OK may still have been written by
  // an attempt that failed and was retried.
  absl::StatusOr<std::vector<GotPage>> BatchGet(
      absl::Span<const PageKey> keys, uint64_t page_bytes_hint = 0,
      absl::Span<const absl::Span<uint8_t>> destinations = {});
  // As above, with destinations that may be split in pieces
  // (common/page_destination.h): a page whose size is the pieces' total
  // fills them in order. A split destination is written by this process
  // only, never by the server (a lane's direct transfers take one buffer
  // per page), so no write reaches it after the call returns.
  absl::StatusOr<std::vector<GotPage>> BatchGet(absl::Span<const PageKey> keys,
                                                uint64_t page_bytes_hint,
                                                absl::Span<const PageDestination> destinations);

  // Returns how many of `keys` were stored and are now deleted.
  absl::StatusOr<uint32_t> Delete(absl::Span<const PageKey> keys, bool force = false);

  // Creates (empty pin_id) or extends a pin; returns its id, opaque bytes
  // (the server's are 16) that only the pinning tenant can use. A split
  // request creates the pin with the first chunk and extends it with the
  // others; if a later chunk fails, a pin created here is released again.
  // The server's codes (store.proto), e.g. INVALID_ARGUMENT for a pin_id
  // that is not 16 bytes, NOT_FOUND for an unknown one; INTERNAL if the
  // server answers an empty id.
  absl::StatusOr<std::string> Pin(absl::Span<const PageKey> keys, uint64_t ttl_ms,
                                  std::string_view pin_id = {});
  // NOT_FOUND for an empty, unknown or expired pin_id; INVALID_ARGUMENT for
  // one that is neither empty nor 16 bytes.
  absl::Status Unpin(std::string_view pin_id);

  absl::StatusOr<v1::StatsResponse> Stats();

  // The cluster's members as the server sees them (ClusterClient routes
  // with it).
  absl::StatusOr<v1::MembersResponse> Members();
  // Admin (store.proto): marks the node draining and waits up to wait_s
  // for its pages to reach their new owners; the call's deadline is
  // wait_s plus deadline_ms. FAILED_PRECONDITION outside a cluster.
  absl::StatusOr<v1::DrainResponse> Drain(uint32_t wait_s);
  // Cluster-internal (an admin credential; store.proto): stores pages in the
  // key space of request.tenant, bytes inline, as one RPC.
  absl::StatusOr<v1::ReplicaPutResponse> ReplicaPut(const v1::ReplicaPutRequest& request);

  // WatchCacheEvents (store.proto) from this node: the pages of the
  // caller's key space it stores and removes. The stream has no deadline
  // (heartbeats keep it alive); CacheEventStream::Cancel ends it from any
  // thread. cache_event_view.h applies its batches.
  std::unique_ptr<CacheEventStream> WatchCacheEvents(const v1::WatchCacheEventsRequest& request);

  const std::string& target() const { return target_; }

  const ClientOptions& options() const { return options_; }
  DataPlaneStats data_plane_stats() const;

  ~StoreClient();

 private:
  using Connection = ClientDataPlane::Connection;

  // BatchGet's destinations for one chunk: empty, or one per key.
  using Destinations = absl::Span<const PageDestination>;
  StoreClient(const std::string& target, std::shared_ptr<grpc::Channel> channel,
              const ClientOptions& options, std::string token);
  // The credentials and namespace every call carries.
  void AddCallMetadata(grpc::ClientContext* context) const;

  template <typename Request, typename Response>
  using Method = grpc::Status (v1::KvStore::Stub::*)(grpc::ClientContext*, const Request&,
                                                      Response*);
  // Runs one RPC with the deadline and the retry policy.
  template <typename Request, typename Response>
  absl::Status Call(Method<Request, Response> method, const Request& request, Response* response);

  absl::Status GetChunk(absl::Span<const PageKey> keys, std::vector<GotPage>* out);
  absl::Status PutChunkInline(absl::Span<const PutPage> pages, std::vector<PutOutcome>* out);
  // Appends one outcome per page of a put RPC's response; INTERNAL when the
  // server answered for another number of pages.
  static absl::Status AppendPutOutcomes(const char* rpc, const v1::BatchPutResponse& response,
                                        size_t n_pages, std::vector<PutOutcome>* out);

  // store_client_ucx.cc: the data-plane path.
  // The current session, opening one if needed; null means inline bytes.
  std::shared_ptr<const Connection> DataPlaneConnection();
  // After a failure: forget `connection` and, unless the server is gone,
  // get a fresh one (null: inline bytes).
  std::shared_ptr<const Connection> ReplaceConnection(
      const std::shared_ptr<const Connection>& connection);
  // Both return UNAVAILABLE or NOT_FOUND when the data plane failed (the
  // caller replaces the connection), other codes as the inline RPCs.
  absl::Status PutChunkUcx(const Connection& connection, absl::Span<const PutPage> pages,
                           std::vector<PutOutcome>* out);
  // `tagged`: kTagged's sends instead of kClientWrites' writes.
  absl::Status PutChunkUcxWrite(const Connection& connection, bool tagged,
                                absl::Span<const PutPage> pages,
                                std::vector<PutOutcome>* out);
  // Sends AbortPut for a reserved transfer and returns `status`, carrying
  // the abort's own error as a payload when it failed too.
  absl::Status AbortTransfer(const Connection& connection, uint64_t transfer_id,
                             absl::Status status);
  absl::Status PutChunkUcxStaged(const Connection& connection, absl::Span<const PutPage> pages,
                                 std::vector<PutOutcome>* out);
  // kAuto's threshold for kClientWrites into a mapped arena when the put is
  // too large for messages: below it the extra RPC costs more than the
  // staging copy it saves (DATA_PLANE.md).
  static constexpr uint64_t kDirectCopyMinBytes = uint64_t{4} << 20;
  // kAuto resolved for this connection and a chunk of `chunk_bytes`.
  UcxPutMode ResolvePutMode(const Connection& connection, size_t chunk_pages,
                            uint64_t chunk_bytes) const;
  // Whether kAuto keeps page bytes inline on this connection.
  bool AutoInline(const Connection& connection) const;
  // GetChunkUcx's RPC into `region`; with a nonzero `tag`, page i arrives in
  // receives[i] at i * slot_bytes.
  absl::Status GetChunkUcxInto(const Connection& connection, absl::Span<const PageKey> keys,
                               const ucx::UcxMemory& region, uint64_t tag, uint64_t slot_bytes,
                               absl::Span<const std::unique_ptr<ucx::UcxTagReceive>> receives,
                               std::vector<GotPage>* out);
  absl::Status GetChunkUcx(const Connection& connection, absl::Span<const PageKey> keys,
                           uint64_t page_bytes_hint, Destinations destinations,
                           std::vector<GotPage>* out);
  // Mapped gets of at most this many keys, and puts into the mapped arena
  // of at most this many pages, go as UCX messages (small enough to travel
  // eagerly); larger ones by RPC.
  static constexpr size_t kMessageMaxKeys = 64;
  // Puts into the mapped arena of at most this many bytes go as messages.
  // The server's one progress thread verifies every byte at CommitPut while
  // other messages wait; RPCs are served by several threads. Measured on 2
  // cores (DATA_PLANE.md): one client puts 5x faster by message at 64 KiB
  // and 2.7x at 256 KiB, but 4-8 clients put 256 KiB 22-29% slower.
  static constexpr uint64_t kMessagePutMaxBytes = uint64_t{128} << 10;
  // Whether a put of `pages` pages and `bytes` bytes copied into the mapped
  // arena goes as messages.
  static bool PutByMessage(size_t pages, uint64_t bytes) {
    return pages <= kMessageMaxKeys && bytes <= kMessagePutMaxBytes;
  }
  // How long a request message waits for its reply.
  static constexpr absl::Duration kMessageReplyTimeout = absl::Seconds(1);
  // `request` as request message `op`, answered by `response`; by RPC
  // `method` when the server does not take it as a message (UNIMPLEMENTED,
  // FAILED_PRECONDITION). Other errors are the server's or the data plane's.
  // Counts message_puts at each CommitPut answered by message.
  template <typename Request, typename Response>
  absl::Status CallPutMessage(const Connection& connection, uint32_t op,
                              Method<Request, Response> method, const Request& request,
                              Response* response);
  // A mapped get: as a UCX message when it is small, else (or when the
  // server takes no messages) as an RPC.
  absl::Status SendMappedGet(const Connection& connection, const v1::BatchGetRequest& request,
                             v1::BatchGetResponse* response);
  // A data-plane BatchGet; INTERNAL unless it answers one page per key.
  absl::Status CallBatchGet(const v1::BatchGetRequest& request, v1::BatchGetResponse* response);
  // Gets whose RAM pages this client copies out of the mapped arena
  // (BatchGetRequest.arena_session_id); a copy that fails its checksum is
  // fetched again inline.
  absl::Status GetChunkMapped(const Connection& connection, absl::Span<const PageKey> keys,
                              Destinations destinations, std::vector<GotPage>* out);
  absl::Status PutChunk(absl::Span<const PutPage> pages, std::vector<PutOutcome>* out);
  // The key and layout of `page`, on its way out.
  static void SetKeyAndLayout(const PutPage& page, v1::PutPage* wire);
  // Fills `page` from wire page i of a data-plane or lane BatchGet: its
  // key, status and, when OK, layout, checksum, tier and (unless
  // `elsewhere`: the bytes are in the arena, a region or a segment, or
  // withheld) its inline bytes. True when nothing is left to fetch for it.
  static absl::StatusOr<bool> TakePageHeader(int i, const PageKey& key, bool elsewhere,
                                             v1::GotPage& wire, GotPage* page);
  // Copies page i's `size` bytes out of shared memory at `src` into
  // destinations[i] when it has that size, else into page->data; returns
  // the checksum of the copy (which is what the caller then holds).
  static uint64_t TakePageBytes(size_t i, const uint8_t* src, size_t size,
                                Destinations destinations, GotPage* page);
  // store_client_lanes.cc. A lane when this client uses lanes and one can
  // be had now; an empty lease otherwise.
  LanePool::Lease LocalLaneLease();
  absl::StatusOr<LocalLane::Grant> OpenLocalLane();
  // A chunk through a lane, in batches that fit its segment (a page larger
  // than the segment goes inline). After an error with the lane broken
  // (lane->broken()) or UNAVAILABLE, the caller sends the chunk otherwise.
  absl::Status PutChunkLane(LocalLane& lane, absl::Span<const PutPage> pages,
                            std::vector<PutOutcome>* out);
  // Sends one lane put and appends its outcomes (counted in lane_put_pages).
  absl::Status CallLanePut(LocalLane& lane, const v1::BatchPutRequest& request,
                           absl::Duration timeout, std::vector<PutOutcome>* out);
  absl::Status GetChunkLane(LocalLane& lane, absl::Span<const PageKey> keys,
                            Destinations destinations, std::vector<GotPage>* out);
  absl::Status GetChunkAny(absl::Span<const PageKey> keys, uint64_t page_bytes_hint,
                           Destinations destinations, std::vector<GotPage>* out);

  // Const after construction.
  const std::string target_;
  const ClientOptions options_;
  // options_.token, or the one read from options_.token_file.
  const std::string token_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KvStore::Stub> stub_;
  // Null when use_ucx is off or UCX cannot start here. Shared with the
  // process's other clients of the same target (ucx_share_data_plane).
  std::shared_ptr<ClientDataPlane> data_plane_;
  // Null when local_lanes is off. lanes_declined_: the server trusts local
  // clients with its arena, which serves them better.
  std::unique_ptr<LanePool> lanes_;
  std::atomic<bool> lanes_declined_{false};

  absl::Mutex open_mu_;
  absl::Time next_open_ ABSL_GUARDED_BY(open_mu_) = absl::InfinitePast();
  int open_failures_ ABSL_GUARDED_BY(open_mu_) = 0;  // in a row
  struct Counters {
    std::atomic<uint64_t> sessions_opened{0};
    std::atomic<uint64_t> ucx_put_pages{0};
    std::atomic<uint64_t> mapped_put_pages{0};
    std::atomic<uint64_t> mapped_get_pages{0};
    std::atomic<uint64_t> mapped_get_retries{0};
    std::atomic<uint64_t> message_gets{0};
    std::atomic<uint64_t> message_puts{0};
    std::atomic<uint64_t> lane_put_pages{0};
    std::atomic<uint64_t> lane_get_pages{0};
    std::atomic<uint64_t> lane_direct_put_pages{0};
    std::atomic<uint64_t> lane_direct_get_pages{0};
    std::atomic<uint64_t> lane_direct_get_retries{0};
    std::atomic<uint64_t> ucx_get_pages{0};
    std::atomic<uint64_t> inline_put_pages{0};
    std::atomic<uint64_t> inline_get_pages{0};
  } counters_;
};

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_STORE_CLIENT_H_
