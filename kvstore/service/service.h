// KvStoreService: the gRPC control plane of the store, a thin adapter over
// kvtier::store::Store. Each RPC validates the whole request (keys of 16
// bytes, layouts, layer ranges, batch sizes, byte counts) and converts it
// with proto/kvtier/v1/convert.h, calls the Store once, and converts the
// result. A request that fails validation never reaches the Store, so it
// changes nothing. Status codes are those documented per RPC in
// proto/kvtier/v1/store.proto.
//
// Handlers run on gRPC's callback threads and call the Store inline: the
// Store is thread-safe and its calls are bounded by the batch limits below.
// Handlers that wait on UCX run on the service's own WaitingPool instead,
// so that no gRPC callback thread blocks on the data plane. The page bytes
// requests hold outside the store are bounded (ServiceLimits::
// max_inflight_bytes, admission.h).
//
// The data-plane RPCs (OpenDataPlane, ReservePut, CommitPut, AbortPut,
// CloseDataPlane, and BatchGet with a region) delegate to a UcxDataPlane;
// without one they answer FAILED_PRECONDITION and clients send bytes inline.
//
// Thread-safety: thread-safe; the Store (and the data plane) must outlive
// the service.
#ifndef KVTIER_KVSTORE_SERVICE_SERVICE_H_
#define KVTIER_KVSTORE_SERVICE_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "kvstore/cluster/membership.h"
#include "kvstore/core/store.h"
#include "kvstore/dataplane/local_lanes.h"
#include "kvstore/dataplane/ucx_data_plane.h"
#include "kvstore/service/admission.h"
#include "kvstore/service/cache_event_feed.h"
#include "kvstore/service/caller.h"
#include "kvstore/service/service_counters.h"
#include "kvtier/v1/data_plane.h"
#include "kvtier/v1/store.grpc.pb.h"

namespace kvtier::store {

struct ServiceLimits {
  // Most pages or keys in one BatchPut/BatchGet/Delete/Pin. Default 1024.
  uint32_t max_batch_pages = 1024;
  // Longest Lookup chain. Default 65536.
  uint32_t max_lookup_pages = 65536;
  // Most layers in one Lookup. Default: the Store's own bound.
  uint32_t max_lookup_layers = Store::kMaxLookupLayers;
  // Most chain x layers entries in one Lookup (bounds the work and the
  // response). Default 2^20, as StoreOptions.
  uint32_t max_lookup_entries = uint32_t{1} << 20;
  // Longest pin TTL. Default 24 h.
  uint64_t max_pin_ttl_ms = 24 * 3600 * 1000;
  // Most page bytes that requests and replies hold at once outside the
  // store's tiers (inline puts, gets that return bytes); a request past it
  // is RESOURCE_EXHAUSTED. Default 512 MiB.
  uint64_t max_inflight_bytes = uint64_t{512} << 20;
  // Threads for the requests that wait on UCX (region transfers, tagged
  // commits, opening and closing sessions), and how many such requests may
  // queue for them before RESOURCE_EXHAUSTED. Defaults 16 and 1024.
  uint32_t waiting_threads = 16;
  uint32_t max_waiting_requests = 1024;

  // The limits the Store itself enforces, so both agree.
  static ServiceLimits FromStoreOptions(const StoreOptions& options);
  // INVALID_ARGUMENT naming the first zero limit.
  absl::Status Validate() const;
};

class KvStoreService final : public kvtier::v1::KvStore::CallbackService {
 public:
  // REQUIRES: store != nullptr, limits.Validate().ok(); store, data_plane
  // (null: bytes inline only) and access (null: no access control, every
  // caller is Caller::Anonymous()) outlive this. With a data plane, also
  // serves the gets its clients send as messages (ServeMessage).
  KvStoreService(Store* store, const ServiceLimits& limits, UcxDataPlane* data_plane = nullptr,
                 const access::AccessControl* access = nullptr);
  ~KvStoreService() override;

  grpc::ServerUnaryReactor* Lookup(grpc::CallbackServerContext* context,
                                   const v1::LookupRequest* request,
                                   v1::LookupResponse* response) override;
  grpc::ServerUnaryReactor* BatchPut(grpc::CallbackServerContext* context,
                                     const v1::BatchPutRequest* request,
                                     v1::BatchPutResponse* response) override;
  grpc::ServerUnaryReactor* BatchGet(grpc::CallbackServerContext* context,
                                     const v1::BatchGetRequest* request,
                                     v1::BatchGetResponse* response) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const v1::DeleteRequest* request,
                                   v1::DeleteResponse* response) override;
  grpc::ServerUnaryReactor* Pin(grpc::CallbackServerContext* context,
                                const v1::PinRequest* request,
                                v1::PinResponse* response) override;
  grpc::ServerUnaryReactor* Unpin(grpc::CallbackServerContext* context,
                                  const v1::UnpinRequest* request,
                                  v1::UnpinResponse* response) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const v1::StatsRequest* request,
                                  v1::StatsResponse* response) override;
  grpc::ServerUnaryReactor* OpenDataPlane(grpc::CallbackServerContext* context,
                                          const v1::OpenDataPlaneRequest* request,
                                          v1::OpenDataPlaneResponse* response) override;
  grpc::ServerUnaryReactor* CloseDataPlane(grpc::CallbackServerContext* context,
                                           const v1::CloseDataPlaneRequest* request,
                                           v1::CloseDataPlaneResponse* response) override;
  grpc::ServerUnaryReactor* ReservePut(grpc::CallbackServerContext* context,
                                       const v1::ReservePutRequest* request,
                                       v1::ReservePutResponse* response) override;
  grpc::ServerUnaryReactor* CommitPut(grpc::CallbackServerContext* context,
                                      const v1::CommitPutRequest* request,
                                      v1::BatchPutResponse* response) override;
  grpc::ServerUnaryReactor* AbortPut(grpc::CallbackServerContext* context,
                                     const v1::AbortPutRequest* request,
                                     v1::AbortPutResponse* response) override;
  grpc::ServerUnaryReactor* OpenLocalLane(grpc::CallbackServerContext* context,
                                          const v1::OpenLocalLaneRequest* request,
                                          v1::OpenLocalLaneResponse* response) override;
  grpc::ServerUnaryReactor* Members(grpc::CallbackServerContext* context,
                                    const v1::MembersRequest* request,
                                    v1::MembersResponse* response) override;
  grpc::ServerUnaryReactor* ReplicaPut(grpc::CallbackServerContext* context,
                                       const v1::ReplicaPutRequest* request,
                                       v1::ReplicaPutResponse* response) override;
  grpc::ServerWriteReactor<v1::CacheEventBatch>* WatchCacheEvents(
      grpc::CallbackServerContext* context, const v1::WatchCacheEventsRequest* request) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context,
                                  const v1::DrainRequest* request,
                                  v1::DrainResponse* response) override;

  // service_cluster.cc. The membership Members answers from (UNAVAILABLE
  // before this is called). `membership` must outlive the service.
  void SetMembership(const cluster::Membership* membership);
  // Any authenticated caller: clients route keys with the view.
  absl::Status DoMembers(v1::MembersResponse* response) const;
  // Admin callers only (another node): stores pages in request.tenant's key
  // space. `held` as DoBatchPut's.
  absl::Status DoReplicaPut(const v1::ReplicaPutRequest& request,
                            v1::ReplicaPutResponse* response,
                            InflightBytes::Grant* held = nullptr);

  // What Drain does on this node: mark it draining, hand its pages on and
  // wait up to `wait` for that; fills the response. Set once the node has
  // joined its cluster; until then Drain answers FAILED_PRECONDITION.
  using DrainHandler =
      std::function<absl::Status(absl::Duration wait, v1::DrainResponse* response)>;
  void SetDrainHandler(DrainHandler handler) ABSL_LOCKS_EXCLUDED(drain_mu_);
  // Admin callers only; runs on the waiting pool (it may wait).
  absl::Status DoDrain(const v1::DrainRequest& request, v1::DrainResponse* response);

  // Serves WatchCacheEvents from `log`, the one the store appends to
  // (StoreOptions::events), from now on (FAILED_PRECONDITION before). Call
  // once, before serving; `log` must outlive the service.
  void StartCacheEvents(CacheEventLog* log, const CacheEventFeedOptions& options);
  // Ends every event stream (UNAVAILABLE) and refuses new ones: before the
  // server shuts down, which waits for open calls.
  void StopCacheEvents();
  // Null before StartCacheEvents.
  const CacheEventFeed* cache_events() const { return feed_.get(); }

  // service_local_lanes.cc. Serves local lanes from now on (OpenLocalLane
  // answers FAILED_PRECONDITION before). Call once, before serving.
  absl::Status StartLocalLanes(const LocalLaneOptions& options);
  // After the access file changed: closes every open lane and forgets
  // unspent tickets, closes every data-plane session and ends every cache
  // event stream, all of which were granted to credentials of the old
  // table (their clients open new ones, authenticated against the new).
  void CloseGrantedChannels();
  // Null before StartLocalLanes.
  const LocalLanes* local_lanes() const { return lanes_.get(); }

  // The handlers without gRPC, for the reactors above and for tests.
  // Each acts for `caller` (caller.h): its keys are the caller's tenant's.
  absl::Status DoLookup(const Caller& caller, const v1::LookupRequest& request,
                        v1::LookupResponse* response);
  // `held` (optional) receives the call's in-flight bytes, to be released
  // once gRPC is done with the request and response; else released on
  // return.
  absl::Status DoBatchPut(const Caller& caller, const v1::BatchPutRequest& request,
                          v1::BatchPutResponse* response, InflightBytes::Grant* held = nullptr);
  absl::Status DoBatchGet(const Caller& caller, const v1::BatchGetRequest& request,
                          v1::BatchGetResponse* response, InflightBytes::Grant* held = nullptr);
  absl::Status DoDelete(const Caller& caller, const v1::DeleteRequest& request,
                        v1::DeleteResponse* response);
  absl::Status DoPin(const Caller& caller, const v1::PinRequest& request,
                     v1::PinResponse* response);
  absl::Status DoUnpin(const Caller& caller, const v1::UnpinRequest& request);
  // Admin only (the store's figures span every tenant). Tenants are named
  // by the current access table (tenants.h, TenantLabel).
  absl::Status DoStats(v1::StatsResponse* response);
  // service_data_plane.cc
  // A session belongs to the caller that opened it: for any other caller
  // it does not exist (NOT_FOUND, as for an unknown id).
  absl::Status DoOpenDataPlane(const Caller& caller, const v1::OpenDataPlaneRequest& request,
                               v1::OpenDataPlaneResponse* response);
  absl::Status DoCloseDataPlane(const Caller& caller, const v1::CloseDataPlaneRequest& request);
  // `make_room`: ReserveOptions'; false for requests on the progress thread.
  absl::Status DoReservePut(const Caller& caller, const v1::ReservePutRequest& request,
                            bool make_room, v1::ReservePutResponse* response);
  // `may_wait`: UcxDataPlane::CommitPut's.
  absl::Status DoCommitPut(const Caller& caller, const v1::CommitPutRequest& request,
                           bool may_wait, v1::BatchPutResponse* response);
  absl::Status DoAbortPut(const Caller& caller, const v1::AbortPutRequest& request);
  // A request that came as a UCX message on `session_id` (ops in
  // ucx_message.h), answered as its RPC would be, with these differences:
  // a mapped get marks pages not in the arena bytes_withheld instead of
  // carrying them; a put must name its own session and not be tagged, and
  // a tagged transfer's commit is FAILED_PRECONDITION (it goes by RPC).
  absl::StatusOr<std::string> ServeMessage(const wire::SessionId& session_id, uint32_t op,
                                           absl::string_view request);
  // Local lanes: a ticket for a lane acting for `caller` (`may_write`: it
  // may store pages in the caller's namespace), and one request a lane
  // carried (kvtier/v1/local_lane.h ops) against its segment.
  absl::Status DoOpenLocalLane(const Caller& caller, bool may_write,
                               v1::OpenLocalLaneResponse* response);
  absl::StatusOr<std::string> ServeLane(const LaneOwner& owner, uint32_t op,
                                        absl::string_view request, absl::Span<uint8_t> segment,
                                        const ClientMemory* client);

  // Admission state, for tests and stats.
  const InflightBytes& inflight() const { return inflight_; }
  // Bytes moved by path and Lookup prefixes, for metrics.
  ServiceCounters::Snapshot counters() const { return counters_.Read(); }
  const WaitingPool& waiting() const { return waiting_; }

 private:
  // Validates `pages` (keys, layouts, duplicates, batch size) into specs.
  // With `inline_bytes`, each page's inline_data must be its layout's byte
  // count; without, it must be empty (the bytes come over the data plane).
  absl::Status SpecsFromProto(const Caller& caller,
                              const google::protobuf::RepeatedPtrField<v1::PutPage>& pages,
                              bool inline_bytes, std::vector<PutSpec>* specs) const;
  // Where each page's bytes lie (its region_offset) in a region or segment
  // of `bytes` bytes (`what`, for the message): INVALID_ARGUMENT for a page
  // that does not lie wholly inside.
  static absl::StatusOr<std::vector<uint64_t>> PageOffsetsWithin(
      const v1::BatchPutRequest& request, absl::Span<const PutSpec> specs, uint64_t bytes,
      const char* what);
  // BatchPut with a region: the server pulls the bytes (UcxDataPlane::PullPut).
  absl::Status DoBatchPutFromRegion(const Caller& caller, const v1::BatchPutRequest& request,
                                    v1::BatchPutResponse* response);
  // A lane's put: the pages' bytes lie in the segment at their
  // region_offset, or (direct transfers) in the client's memory at their
  // client_address; the store copies and verifies them.
  absl::Status DoBatchPutFromLane(const Caller& caller, const v1::BatchPutRequest& request,
                                  absl::Span<const uint8_t> segment, const ClientMemory* client,
                                  v1::BatchPutResponse* response);
  // A lane's get: OK pages are written into the client's lane_destinations
  // where the request names one of their size (direct transfers,
  // in_destination, not hashed here), the others copied into the segment
  // one after another (in_region); those that do not fit come inline, and
  // a RAM page whose copy into the segment fails its checksum is withheld
  // (bytes_withheld: ask by RPC).
  absl::Status DoBatchGetToLane(const Caller& caller, const v1::BatchGetRequest& request,
                                absl::Span<uint8_t> segment, const ClientMemory* client,
                                v1::BatchGetResponse* response);
  // Counts a get's OK pages: those carried inline as kInline, the others
  // (not withheld) as `path`.
  void CountGot(BytePath path, const v1::BatchGetResponse& response);
  // Appends one page per result (status, layout, checksum, tier; no
  // bytes). INTERNAL for a result count that is not the key count; a
  // status no page can carry (an I/O error) is returned as is.
  absl::Status AddGotPages(absl::Span<const PageKey> keys, absl::Span<const GetResult> results,
                           v1::BatchGetResponse* response);
  // A region's session, once the region is validated (before the store is
  // read).
  absl::StatusOr<wire::SessionId> CheckRegion(const Caller& caller,
                                              const v1::DataPlaneRegion& region) const;
  // The session `session_id` names: INVALID_ARGUMENT unless it is 16
  // bytes, NOT_FOUND unless it is open and the caller's.
  absl::StatusOr<wire::SessionId> CheckSession(const Caller& caller,
                                               absl::string_view session_id) const;
  // Whether `session` is open and the caller's: where another tenant's
  // session, like an unknown one, is ignored (close, abort).
  bool IsOwnSession(const Caller& caller, const wire::SessionId& session) const;
  // A BatchGet's keys, validated (count, each key, region or arena).
  absl::StatusOr<std::vector<PageKey>> GetKeys(const Caller& caller,
                                               const v1::BatchGetRequest& request) const;
  // A BatchGet with arena_session_id: RAM pages are located, not copied.
  // `withhold_disk`: disk pages are not read but marked bytes_withheld (for
  // replies to request messages, which stay small).
  absl::Status DoBatchGetFromArena(const Caller& caller, absl::string_view session_id,
                                   absl::Span<const PageKey> keys,
                                   bool withhold_disk, v1::BatchGetResponse* response);
  // BatchGet with a region: reads the pages in place (Store::BatchGetInPlace)
  // and moves RAM pages from the arena to the client while their leases
  // hold them, so the server copies no RAM page. A lease lasts the
  // transfer (at most the data plane's transfer_timeout_ms), and a leased
  // page is not evicted meanwhile.
  absl::Status DoBatchGetToRegion(const Caller& caller, const v1::DataPlaneRegion& region,
                                  absl::Span<const PageKey> keys, v1::BatchGetResponse* response);
  // Writes the OK pages (`bytes`, one per page) that fit into the region,
  // marking them in_region, and copies the rest inline. Every transfer is
  // complete when it returns (UcxDataPlane::WriteToRegion flushes).
  absl::Status WriteRegion(const v1::DataPlaneRegion& region, const wire::SessionId& session,
                           absl::Span<const absl::Span<const uint8_t>> bytes,
                           v1::BatchGetResponse* response);
  // WriteRegion for a region with a tag: sends page i as a tagged message
  // (tag + i) into the client's receive at slot i, and waits for the sends.
  absl::Status SendToRegion(const v1::DataPlaneRegion& region, const wire::SessionId& session,
                            absl::Span<const absl::Span<const uint8_t>> bytes,
                            v1::BatchGetResponse* response);

  // A handler of a call that may hold in-flight bytes until it is done.
  using Handler = absl::AnyInvocable<absl::Status(InflightBytes::Grant* held) &&>;
  // Finish the call with the handler's status: run here with gRPC's default
  // reactor (a call that holds no in-flight bytes); run here holding them;
  // or run on waiting_ (RESOURCE_EXHAUSTED when its queue is full).
  static grpc::ServerUnaryReactor* Respond(grpc::CallbackServerContext* context,
                                           absl::FunctionRef<absl::Status()> handler);
  static grpc::ServerUnaryReactor* RespondHolding(Handler handler);
  grpc::ServerUnaryReactor* RespondAfterWaiting(Handler handler);

  // Const after construction.
  Store* const store_;
  const ServiceLimits limits_;
  UcxDataPlane* const data_plane_;  // null: no data plane
  const access::AccessControl* const access_;  // null: no access control
  const Authenticator authenticator_;
  InflightBytes inflight_;
  ServiceCounters counters_;
  // Last: its threads finish the queued calls before the rest goes.
  WaitingPool waiting_;
  // Set once by StartLocalLanes, before serving; closed first on
  // destruction (its threads call the handlers above).
  std::unique_ptr<LocalLanes> lanes_;
  mutable absl::Mutex drain_mu_;
  std::shared_ptr<const DrainHandler> drain_ ABSL_GUARDED_BY(drain_mu_);
  // Set once by StartCacheEvents, before serving.
  std::unique_ptr<CacheEventFeed> feed_;
  // Set once by SetMembership, after the server bound its port.
  std::atomic<const cluster::Membership*> membership_{nullptr};
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_SERVICE_SERVICE_H_
