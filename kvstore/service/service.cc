#include "kvstore/service/service.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kvstore/service/tenants.h"
#include "kvtier/v1/convert.h"

namespace kvtier::store {
namespace {

using ::kvtier::v1::KeyFromProto;
using ::kvtier::v1::KeyToProto;
using ::kvtier::v1::ToGrpcStatus;

v1::Tier TierToProto(Tier tier) {
  switch (tier) {
    case Tier::kRam: return v1::TIER_RAM;
    case Tier::kDisk: return v1::TIER_DISK;
    case Tier::kNone: break;
  }
  return v1::TIER_NONE;
}

void TierStatsToProto(const TierStats& s, v1::TierStats* out) {
  out->set_pages(s.pages);
  out->set_used_bytes(s.used_bytes);
  out->set_capacity_bytes(s.capacity_bytes);
  out->set_high_watermark_bytes(s.high_watermark_bytes);
  out->set_low_watermark_bytes(s.low_watermark_bytes);
  out->set_hits(s.hits);
  out->set_evictions(s.evictions);
  out->set_pinned_pages(s.pinned_pages);
  out->set_bytes_in(s.bytes_in);
  out->set_bytes_out(s.bytes_out);
}

absl::Status CheckBatchSize(size_t n, uint32_t max, absl::string_view what, bool allow_empty) {
  if (n == 0 && !allow_empty) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": empty batch"));
  }
  if (n > max) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d entries exceed max_batch_pages %d", what, n, max));
  }
  return absl::OkStatus();
}

// Converts every key into the caller's key space, naming the first bad one
// by index.
absl::StatusOr<std::vector<PageKey>> KeysFromProto(
    const Caller& caller, const google::protobuf::RepeatedPtrField<v1::PageKey>& keys) {
  std::vector<PageKey> out;
  out.reserve(keys.size());
  for (int i = 0; i < keys.size(); ++i) {
    ASSIGN_OR_RETURN(PageKey key, KeyFromProto(keys[i], absl::StrCat("keys[", i, "]")));
    key.tenant = caller.tenant;
    out.push_back(key);
  }
  return out;
}

// Holds a call's in-flight bytes until gRPC is done with its request and
// response, then deletes itself.
class HoldingReactor final : public grpc::ServerUnaryReactor {
 public:
  void OnDone() override { delete this; }
  InflightBytes::Grant held;
};

}  // namespace

grpc::ServerUnaryReactor* KvStoreService::Respond(grpc::CallbackServerContext* context,
                                                  absl::FunctionRef<absl::Status()> handler) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(handler()));
  return reactor;
}

grpc::ServerUnaryReactor* KvStoreService::RespondHolding(Handler handler) {
  auto* reactor = new HoldingReactor;
  reactor->Finish(ToGrpcStatus(std::move(handler)(&reactor->held)));
  return reactor;
}

grpc::ServerUnaryReactor* KvStoreService::RespondAfterWaiting(Handler handler) {
  auto* reactor = new HoldingReactor;
  absl::Status queued =
      waiting_.Submit([reactor, handler = std::move(handler)]() mutable {
        reactor->Finish(ToGrpcStatus(std::move(handler)(&reactor->held)));
      });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

ServiceLimits ServiceLimits::FromStoreOptions(const StoreOptions& options) {
  ServiceLimits limits;
  limits.max_batch_pages = options.max_batch_pages;
  limits.max_lookup_pages = options.max_lookup_pages;
  limits.max_lookup_entries = options.max_lookup_entries;
  limits.max_pin_ttl_ms = options.max_pin_ttl_ms;
  return limits;
}

absl::Status ServiceLimits::Validate() const {
  if (max_batch_pages == 0 || max_batch_pages > wire::kMaxTagPages) {
    // A tagged transfer's page index fits its tag's low bits.
    return absl::InvalidArgumentError(
        absl::StrFormat("max_batch_pages %d: need 1..%d", max_batch_pages, wire::kMaxTagPages));
  }
  if (max_lookup_pages == 0) return absl::InvalidArgumentError("max_lookup_pages must be > 0");
  if (max_lookup_entries == 0) {
    return absl::InvalidArgumentError("max_lookup_entries must be > 0");
  }
  if (max_lookup_layers == 0) {
    return absl::InvalidArgumentError("max_lookup_layers must be > 0");
  }
  if (max_pin_ttl_ms == 0) return absl::InvalidArgumentError("max_pin_ttl_ms must be > 0");
  if (max_inflight_bytes == 0) {
    return absl::InvalidArgumentError("max_inflight_bytes must be > 0");
  }
  if (waiting_threads == 0) return absl::InvalidArgumentError("waiting_threads must be > 0");
  if (max_waiting_requests == 0) {
    return absl::InvalidArgumentError("max_waiting_requests must be > 0");
  }
  return absl::OkStatus();
}

KvStoreService::KvStoreService(Store* store, const ServiceLimits& limits,
                               UcxDataPlane* data_plane, const access::AccessControl* access)
    : store_(store),
      limits_(limits),
      data_plane_(data_plane),
      access_(access),
      authenticator_(access),
      inflight_(limits.max_inflight_bytes),
      waiting_(static_cast<int>(limits.waiting_threads), limits.max_waiting_requests) {
  if (data_plane_ != nullptr) {
    data_plane_->SetRequestHandler(
        [this](const wire::SessionId& session_id, uint32_t op, absl::string_view request) {
          return ServeMessage(session_id, op, request);
        });
  }
}

KvStoreService::~KvStoreService() {
  lanes_.reset();
  if (data_plane_ != nullptr) data_plane_->SetRequestHandler(nullptr);
}

absl::Status KvStoreService::DoLookup(const Caller& caller, const v1::LookupRequest& request,
                                      v1::LookupResponse* response) {
  const int n = request.chain_size();
  if (static_cast<uint64_t>(n) > limits_.max_lookup_pages) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chain: %d pages exceed max_lookup_pages %d", n, limits_.max_lookup_pages));
  }
  const uint32_t layer_count = request.layer_count() == 0 ? 1 : request.layer_count();
  if (layer_count > limits_.max_lookup_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layer_count %d exceeds %d", layer_count, limits_.max_lookup_layers));
  }
  if (uint64_t{request.layer_begin()} + layer_count > uint64_t{UINT32_MAX} + 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layers [%d, %d + %d) overflow the layer index", request.layer_begin(),
        request.layer_begin(), layer_count));
  }
  // Before any key is decoded: the work and the response are chain x layers.
  if (static_cast<uint64_t>(n) * layer_count > limits_.max_lookup_entries) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d pages x %d layers exceed max_lookup_entries %d", n, layer_count,
        limits_.max_lookup_entries));
  }
  std::vector<Hash128> chain;
  chain.reserve(n);
  for (int i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(Hash128 h,
                     v1::HashFromProto(request.chain(i), absl::StrCat("chain[", i, "]")));
    chain.push_back(h);
  }
  ASSIGN_OR_RETURN(LookupResult result,
                   store_->Lookup(caller.tenant, chain, request.layer_begin(), layer_count));
  response->set_prefix_pages(result.prefix_pages);
  counters_.AddLookup(static_cast<uint64_t>(n), result.prefix_pages);
  response->mutable_tiers()->Reserve(static_cast<int>(result.tiers.size()));
  for (Tier t : result.tiers) response->add_tiers(TierToProto(t));
  return absl::OkStatus();
}

absl::Status KvStoreService::SpecsFromProto(
    const Caller& caller, const google::protobuf::RepeatedPtrField<v1::PutPage>& pages,
    bool inline_bytes, std::vector<PutSpec>* specs) const {
  const int n = pages.size();
  RETURN_IF_ERROR(CheckBatchSize(n, limits_.max_batch_pages, "pages", /*allow_empty=*/false));
  specs->reserve(n);
  absl::flat_hash_set<PageKey> seen;
  for (int i = 0; i < n; ++i) {
    const v1::PutPage& page = pages[i];
    const std::string where = absl::StrCat("pages[", i, "]");
    PutSpec spec;
    ASSIGN_OR_RETURN(spec.key, KeyFromProto(page.key(), where + ".key"));
    spec.key.tenant = caller.tenant;
    ASSIGN_OR_RETURN(spec.layout, v1::LayoutFromProto(page.layout(), where + ".layout"));
    spec.checksum = page.checksum();
    const uint64_t want = inline_bytes ? spec.layout.PageBytes() : 0;
    if (page.inline_data().size() != want) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s.inline_data: %d bytes, layout %s needs %d%s", where, page.inline_data().size(),
          spec.layout.DebugString(), want, inline_bytes ? "" : " (bytes go over the data plane)"));
    }
    if (!seen.insert(spec.key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".key: ", spec.key.DebugString(), " appears twice in the batch"));
    }
    specs->push_back(spec);
  }
  return absl::OkStatus();
}

absl::Status KvStoreService::DoBatchPut(const Caller& caller, const v1::BatchPutRequest& request,
                                        v1::BatchPutResponse* response,
                                        InflightBytes::Grant* held) {
  if (request.has_region()) return DoBatchPutFromRegion(caller, request, response);
  std::vector<PutSpec> specs;
  RETURN_IF_ERROR(SpecsFromProto(caller, request.pages(), /*inline_bytes=*/true, &specs));
  uint64_t bytes = 0;
  for (const v1::PutPage& page : request.pages()) bytes += page.inline_data().size();
  ASSIGN_OR_RETURN(InflightBytes::Grant grant, inflight_.Acquire(bytes, "BatchPut"));
  if (held != nullptr) *held = std::move(grant);
  std::vector<absl::Span<const uint8_t>> data;
  data.reserve(specs.size());
  for (const v1::PutPage& page : request.pages()) {
    data.emplace_back(reinterpret_cast<const uint8_t*>(page.inline_data().data()),
                      page.inline_data().size());
  }
  ASSIGN_OR_RETURN(std::vector<PutResult> results, store_->BatchPut(specs, data));
  if (results.size() != specs.size()) {
    return absl::InternalError(absl::StrFormat("store returned %d results for %d pages",
                                               results.size(), specs.size()));
  }
  counters_.AddPut(BytePath::kInline, bytes);
  for (const PutResult& r : results) response->add_results()->set_already_present(r.already_present);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PageKey>> KvStoreService::GetKeys(
    const Caller& caller, const v1::BatchGetRequest& request) const {
  RETURN_IF_ERROR(CheckBatchSize(request.keys_size(), limits_.max_batch_pages, "keys",
                                 /*allow_empty=*/false));
  if (request.has_region() && !request.arena_session_id().empty()) {
    return absl::InvalidArgumentError("set region or arena_session_id, not both");
  }
  return KeysFromProto(caller, request.keys());
}

absl::Status KvStoreService::DoBatchGet(const Caller& caller, const v1::BatchGetRequest& request,
                                        v1::BatchGetResponse* response,
                                        InflightBytes::Grant* held) {
  ASSIGN_OR_RETURN(std::vector<PageKey> keys, GetKeys(caller, request));
  // Bytes the reply will carry, or (region) the server will stage.
  // Arena gets carry RAM pages by reference.
  const Store::StoredBytes stored = store_->BytesOf(keys);
  const uint64_t bytes =
      stored.disk_only + (request.arena_session_id().empty() ? stored.ram : 0);
  ASSIGN_OR_RETURN(InflightBytes::Grant grant, inflight_.Acquire(bytes, "BatchGet"));
  if (held != nullptr) *held = std::move(grant);
  if (request.has_region()) {
    return DoBatchGetToRegion(caller, request.region(), keys, response);
  }
  if (!request.arena_session_id().empty()) {
    return DoBatchGetFromArena(caller, request.arena_session_id(), keys,
                               /*withhold_disk=*/false, response);
  }
  ASSIGN_OR_RETURN(std::vector<GetResult> results, store_->BatchGet(keys));
  RETURN_IF_ERROR(AddGotPages(keys, results, response));
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!results[i].status.ok()) continue;
    response->mutable_pages(i)->set_inline_data(std::move(results[i].data));
  }
  CountGot(BytePath::kInline, *response);
  return absl::OkStatus();
}

void KvStoreService::CountGot(BytePath path, const v1::BatchGetResponse& response) {
  uint64_t inline_bytes = 0;
  uint64_t path_bytes = 0;
  for (const v1::GotPage& page : response.pages()) {
    if (page.status() != v1::PAGE_STATUS_OK || page.bytes_withheld()) continue;
    if (!page.inline_data().empty()) {
      inline_bytes += page.inline_data().size();
    } else if (absl::StatusOr<PageLayout> layout = v1::LayoutFromProto(page.layout(), "layout");
               layout.ok()) {
      path_bytes += layout->PageBytes();
    }
  }
  counters_.AddGet(BytePath::kInline, inline_bytes);
  if (path != BytePath::kInline) counters_.AddGet(path, path_bytes);
}

absl::Status KvStoreService::AddGotPages(absl::Span<const PageKey> keys,
                                         absl::Span<const GetResult> results,
                                         v1::BatchGetResponse* response) {
  if (results.size() != keys.size()) {
    return absl::InternalError(absl::StrFormat("store returned %d results for %d keys",
                                               results.size(), keys.size()));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    const GetResult& r = results[i];
    v1::GotPage* page = response->add_pages();
    KeyToProto(keys[i], page->mutable_key());
    switch (r.status.code()) {
      case absl::StatusCode::kOk:
        page->set_status(v1::PAGE_STATUS_OK);
        v1::LayoutToProto(r.layout, page->mutable_layout());
        page->set_checksum(r.checksum);
        page->set_tier(TierToProto(r.tier));
        break;
      case absl::StatusCode::kNotFound:
        page->set_status(v1::PAGE_STATUS_NOT_FOUND);
        break;
      case absl::StatusCode::kDataLoss:
        page->set_status(v1::PAGE_STATUS_LOST);
        break;
      default:
        // Not a per-page outcome the wire can express (e.g. an I/O error).
        return r.status;
    }
  }
  return absl::OkStatus();
}

absl::Status KvStoreService::DoDelete(const Caller& caller, const v1::DeleteRequest& request,
                                      v1::DeleteResponse* response) {
  RETURN_IF_ERROR(CheckBatchSize(request.keys_size(), limits_.max_batch_pages, "keys",
                                 /*allow_empty=*/true));
  ASSIGN_OR_RETURN(std::vector<PageKey> keys, KeysFromProto(caller, request.keys()));
  if (keys.empty()) {
    response->set_deleted_pages(0);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(uint32_t deleted, store_->Delete(keys, request.force()));
  response->set_deleted_pages(deleted);
  return absl::OkStatus();
}

absl::Status KvStoreService::DoPin(const Caller& caller, const v1::PinRequest& request,
                                   v1::PinResponse* response) {
  RETURN_IF_ERROR(CheckBatchSize(request.keys_size(), limits_.max_batch_pages, "keys",
                                 /*allow_empty=*/true));
  if (request.ttl_ms() == 0 || request.ttl_ms() > limits_.max_pin_ttl_ms) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ttl_ms %d out of range [1, %d]", request.ttl_ms(), limits_.max_pin_ttl_ms));
  }
  ASSIGN_OR_RETURN(const PinId pin_id, PinId::FromBytesOrEmpty(request.pin_id()));
  if (pin_id.IsZero() && request.keys_size() == 0) {
    return absl::InvalidArgumentError("keys: a new pin (no pin_id) needs at least one key");
  }
  ASSIGN_OR_RETURN(std::vector<PageKey> keys, KeysFromProto(caller, request.keys()));
  ASSIGN_OR_RETURN(const PinId pinned, store_->Pin(caller.tenant, keys, request.ttl_ms(), pin_id));
  response->set_pin_id(pinned.Bytes());
  return absl::OkStatus();
}

absl::Status KvStoreService::DoUnpin(const Caller& caller, const v1::UnpinRequest& request) {
  ASSIGN_OR_RETURN(const PinId pin_id, PinId::FromBytesOrEmpty(request.pin_id()));
  if (pin_id.IsZero()) return absl::NotFoundError("an empty pin_id is never a pin");
  return store_->Unpin(caller.tenant, pin_id);
}

absl::Status KvStoreService::DoStats(v1::StatsResponse* response) {
  const StoreStats s = store_->Stats();
  TierStatsToProto(s.ram, response->mutable_ram());
  TierStatsToProto(s.disk, response->mutable_disk());
  response->set_put_pages(s.put_pages);
  response->set_put_duplicate_pages(s.put_duplicate_pages);
  response->set_get_misses(s.get_misses);
  response->set_lost_pages(s.lost_pages);
  response->set_demotions(s.demotions);
  response->set_promotions(s.promotions);
  response->set_dropped_pages(s.dropped_pages);
  response->set_reserved_bytes(s.reserved_bytes);
  response->set_active_pins(s.active_pins);
  response->set_quarantined_bytes(s.quarantined_bytes);
  response->set_lookups(s.lookups);
  response->set_unverified_disk_pages(s.unverified_disk_pages);
  response->set_set_aside_files(s.set_aside_files);
  response->set_data_dir_bytes(s.data_dir_bytes);
  response->set_data_dir_bound_bytes(s.data_dir_bound_bytes);
  response->set_disk_space_refusals(s.disk_space_refusals);
  response->set_disk_garbage_collections(s.disk_garbage_collections);
  const std::shared_ptr<const access::AccessTable> table =
      access_ != nullptr ? access_->Current() : nullptr;
  for (const TenantStats& t : s.tenants) {
    v1::TenantStats* out = response->add_tenants();
    out->set_tenant(TenantLabel(table.get(), t.tenant));
    out->set_ram_bytes(t.ram_bytes);
    out->set_disk_bytes(t.disk_bytes);
    out->set_ram_pages(t.ram_pages);
    out->set_disk_pages(t.disk_pages);
    out->set_pins(t.pins);
    out->set_pinned_bytes(t.pinned_bytes);
    out->set_max_ram_bytes(t.quotas.max_ram_bytes);
    out->set_max_disk_bytes(t.quotas.max_disk_bytes);
    out->set_max_pins(t.quotas.max_pins);
    out->set_max_pinned_bytes(t.quotas.max_pinned_bytes);
    out->set_quota_refusals(t.quota_refusals);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KvStoreService::Lookup(grpc::CallbackServerContext* context,
                                                 const v1::LookupRequest* request,
                                                 v1::LookupResponse* response) {
  return Respond(context, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(const Caller caller, authenticator_.Authenticate(*context, Need::kRead));
    return DoLookup(caller, *request, response);
  });
}

grpc::ServerUnaryReactor* KvStoreService::BatchPut(grpc::CallbackServerContext* context,
                                                   const v1::BatchPutRequest* request,
                                                   v1::BatchPutResponse* response) {
  absl::StatusOr<Caller> caller = authenticator_.Authenticate(*context, Need::kWrite);
  if (!caller.ok()) return Respond(context, [&] { return caller.status(); });
  if (request->has_region()) {  // the server pulls the bytes over UCX
    return RespondAfterWaiting(
        [this, caller = *std::move(caller), request, response](InflightBytes::Grant* held) {
          return DoBatchPut(caller, *request, response, held);
        });
  }
  return RespondHolding(
      [&](InflightBytes::Grant* held) { return DoBatchPut(*caller, *request, response, held); });
}

grpc::ServerUnaryReactor* KvStoreService::BatchGet(grpc::CallbackServerContext* context,
                                                   const v1::BatchGetRequest* request,
                                                   v1::BatchGetResponse* response) {
  absl::StatusOr<Caller> caller = authenticator_.Authenticate(*context, Need::kRead);
  if (!caller.ok()) return Respond(context, [&] { return caller.status(); });
  if (request->has_region()) {  // the server writes the bytes over UCX
    return RespondAfterWaiting(
        [this, caller = *std::move(caller), request, response](InflightBytes::Grant* held) {
          return DoBatchGet(caller, *request, response, held);
        });
  }
  return RespondHolding(
      [&](InflightBytes::Grant* held) { return DoBatchGet(*caller, *request, response, held); });
}

grpc::ServerUnaryReactor* KvStoreService::Delete(grpc::CallbackServerContext* context,
                                                 const v1::DeleteRequest* request,
                                                 v1::DeleteResponse* response) {
  return Respond(context, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(const Caller caller, authenticator_.Authenticate(*context, Need::kWrite));
    return DoDelete(caller, *request, response);
  });
}

grpc::ServerUnaryReactor* KvStoreService::Pin(grpc::CallbackServerContext* context,
                                              const v1::PinRequest* request,
                                              v1::PinResponse* response) {
  return Respond(context, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(const Caller caller, authenticator_.Authenticate(*context, Need::kWrite));
    return DoPin(caller, *request, response);
  });
}

grpc::ServerUnaryReactor* KvStoreService::Unpin(grpc::CallbackServerContext* context,
                                                const v1::UnpinRequest* request,
                                                v1::UnpinResponse* /*response*/) {
  return Respond(context, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(const Caller caller, authenticator_.Authenticate(*context, Need::kWrite));
    return DoUnpin(caller, *request);
  });
}

grpc::ServerUnaryReactor* KvStoreService::Stats(grpc::CallbackServerContext* context,
                                                const v1::StatsRequest* /*request*/,
                                                v1::StatsResponse* response) {
  return Respond(context, [&]() -> absl::Status {
    RETURN_IF_ERROR(authenticator_.Authenticate(*context, Need::kAdmin).status());
    return DoStats(response);
  });
}

}  // namespace kvtier::store
