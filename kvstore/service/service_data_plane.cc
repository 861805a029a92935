// KvStoreService's data-plane RPCs: thin adapters over UcxDataPlane.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kvstore/service/service.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/data_plane.h"
#include "ucx/message.h"

namespace kvtier::store {
namespace {

constexpr uint64_t kRegionAlignBytes = 64;

std::string AsString(absl::Span<const uint8_t> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// For the paths where a client reaches the arena itself.
absl::Status ArenaNotExposed() {
  return absl::FailedPreconditionError(
      "this server gives clients no access to its memory (trusted_local_clients is off): put "
      "with a region or tagged, get with a region");
}

absl::Status NoDataPlane() {
  return absl::FailedPreconditionError("this server runs without a UCX data plane (--noucx, or TLS without allow_insecure)");
}

}  // namespace

absl::Status KvStoreService::DoOpenDataPlane(const Caller& caller,
                                             const v1::OpenDataPlaneRequest& request,
                                             v1::OpenDataPlaneResponse* response) {
  if (data_plane_ == nullptr) return NoDataPlane();
  ASSIGN_OR_RETURN(UcxDataPlane::OpenReply reply,
                   data_plane_->Open(request.client_worker_address(), caller.tenant,
                                     [&] { return authenticator_.IsCurrent(caller); }));
  response->set_session_id(reply.session_id.Bytes());
  response->set_server_worker_address(std::move(reply.worker_address));
  response->set_arena_address(reply.arena_address);
  response->set_arena_bytes(reply.arena_bytes);
  response->set_arena_rkey(std::move(reply.arena_rkey));
  return absl::OkStatus();
}

absl::StatusOr<wire::SessionId> KvStoreService::CheckSession(
    const Caller& caller, absl::string_view session_id) const {
  if (data_plane_ == nullptr) return NoDataPlane();
  ASSIGN_OR_RETURN(const wire::SessionId id, wire::SessionId::FromBytes(session_id));
  RETURN_IF_ERROR(data_plane_->CheckSession(id, caller.tenant));
  return id;
}

bool KvStoreService::IsOwnSession(const Caller& caller, const wire::SessionId& session) const {
  return data_plane_ != nullptr && data_plane_->CheckSession(session, caller.tenant).ok();
}

absl::Status KvStoreService::DoCloseDataPlane(const Caller& caller,
                                              const v1::CloseDataPlaneRequest& request) {
  ASSIGN_OR_RETURN(const wire::SessionId session, wire::SessionId::FromBytes(request.session_id()));
  if (IsOwnSession(caller, session)) data_plane_->Close(session);
  return absl::OkStatus();
}

absl::Status KvStoreService::DoReservePut(const Caller& caller,
                                          const v1::ReservePutRequest& request, bool make_room,
                                          v1::ReservePutResponse* response) {
  if (data_plane_ == nullptr) return NoDataPlane();
  std::vector<PutSpec> specs;
  RETURN_IF_ERROR(SpecsFromProto(caller, request.pages(), /*inline_bytes=*/false, &specs));
  ASSIGN_OR_RETURN(const wire::SessionId session, CheckSession(caller, request.session_id()));
  // An untagged reservation is written by the client into the arena.
  if (!request.tagged() && !data_plane_->options().expose_arena) return ArenaNotExposed();
  ASSIGN_OR_RETURN(UcxDataPlane::ReserveReply reply,
                   data_plane_->ReservePut(session, specs, request.tagged(), make_room));
  response->set_transfer_id(reply.transfer_id);
  // Counted when reserved: the bytes the client is to write.
  uint64_t bytes = 0;
  for (size_t i = 0; i < reply.slots.size() && i < specs.size(); ++i) {
    if (!reply.slots[i].already_present) bytes += specs[i].layout.PageBytes();
  }
  counters_.AddPut(BytePath::kDataPlane, bytes);
  for (const UcxDataPlane::Slot& slot : reply.slots) {
    v1::PutSlot* out = response->add_slots();
    out->set_already_present(slot.already_present);
    out->set_arena_offset(slot.arena_offset);
  }
  return absl::OkStatus();
}

absl::Status KvStoreService::DoCommitPut(const Caller& caller,
                                         const v1::CommitPutRequest& request, bool may_wait,
                                         v1::BatchPutResponse* response) {
  if (data_plane_ == nullptr) return NoDataPlane();
  ASSIGN_OR_RETURN(const wire::SessionId session, CheckSession(caller, request.session_id()));
  ASSIGN_OR_RETURN(std::vector<PutResult> results,
                   data_plane_->CommitPut(session, request.transfer_id(), request.checksums(),
                                          may_wait));
  for (const PutResult& r : results) response->add_results()->set_already_present(r.already_present);
  return absl::OkStatus();
}

absl::Status KvStoreService::DoAbortPut(const Caller& caller,
                                        const v1::AbortPutRequest& request) {
  ASSIGN_OR_RETURN(const wire::SessionId session, wire::SessionId::FromBytes(request.session_id()));
  if (IsOwnSession(caller, session)) data_plane_->AbortPut(session, request.transfer_id());
  return absl::OkStatus();
}

absl::StatusOr<wire::SessionId> KvStoreService::CheckRegion(
    const Caller& caller, const v1::DataPlaneRegion& region) const {
  if (data_plane_ == nullptr) return NoDataPlane();
  if (region.bytes() == 0 || region.address() == 0) {
    return absl::InvalidArgumentError("region: address and bytes must be > 0");
  }
  if (region.address() + region.bytes() < region.address()) {
    return absl::InvalidArgumentError("region: address + bytes overflows");
  }
  if (region.tag() != 0 && !wire::IsTagBase(region.tag())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "region.tag %#x: the low %d bits must be zero", region.tag(), wire::kTagIndexBits));
  }
  if (region.tag() != 0 && (region.slot_bytes() == 0 || region.slot_bytes() > region.bytes())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "region.slot_bytes %d: need 1..%d with a tag", region.slot_bytes(), region.bytes()));
  }
  ASSIGN_OR_RETURN(const wire::SessionId session, wire::SessionId::FromBytes(region.session_id()));
  RETURN_IF_ERROR(data_plane_->CheckRegion(session, caller.tenant, region.rkey()));
  return session;
}

absl::Status KvStoreService::DoBatchPutFromRegion(const Caller& caller,
                                                  const v1::BatchPutRequest& request,
                                                  v1::BatchPutResponse* response) {
  const v1::DataPlaneRegion& region = request.region();
  std::vector<PutSpec> specs;
  RETURN_IF_ERROR(SpecsFromProto(caller, request.pages(), /*inline_bytes=*/false, &specs));
  ASSIGN_OR_RETURN(const wire::SessionId session, CheckRegion(caller, region));
  ASSIGN_OR_RETURN(const std::vector<uint64_t> offsets,
                   PageOffsetsWithin(request, specs, region.bytes(), "region"));
  const absl::Time deadline =
      absl::Now() + absl::Milliseconds(data_plane_->options().transfer_timeout_ms);
  ASSIGN_OR_RETURN(std::vector<PutResult> results,
                   data_plane_->PullPut(session, region.address(), region.rkey(), specs,
                                        offsets, deadline));
  uint64_t bytes = 0;
  for (const PutSpec& spec : specs) bytes += spec.layout.PageBytes();
  counters_.AddPut(BytePath::kDataPlane, bytes);
  for (const PutResult& r : results) response->add_results()->set_already_present(r.already_present);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> KvStoreService::PageOffsetsWithin(
    const v1::BatchPutRequest& request, absl::Span<const PutSpec> specs, uint64_t bytes,
    const char* what) {
  std::vector<uint64_t> offsets;
  offsets.reserve(specs.size());
  for (int i = 0; i < request.pages_size(); ++i) {
    const uint64_t offset = request.pages(i).region_offset();
    const uint64_t page_bytes = specs[i].layout.PageBytes();
    if (offset > bytes || page_bytes > bytes - offset) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "pages[%d].region_offset: %d + %d bytes outside the %s of %d bytes", i, offset,
          page_bytes, what, bytes));
    }
    offsets.push_back(offset);
  }
  return offsets;
}

absl::StatusOr<std::string> KvStoreService::ServeMessage(const wire::SessionId& session_id,
                                                         uint32_t op, absl::string_view bytes) {
  // A message is answered by the progress thread that receives it, so only
  // requests that wait on nothing are taken: no region transfer, no tagged
  // put (their commits wait on UCX), no put that must make room on disk
  // (FAILED_PRECONDITION, which the client answers with the RPC), no disk
  // page read (withheld).
  auto parse = [bytes](google::protobuf::MessageLite* request) -> absl::Status {
    if (!request->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::InvalidArgumentError(
          absl::StrCat("request message: not a ", request->GetTypeName()));
    }
    return absl::OkStatus();
  };
  // The caller is the session's owner: its id reached the client only
  // through the owner's authenticated OpenDataPlane. Every request message
  // works on the arena (a mapped get, a put the client copies into its
  // slots), so it needs clients trusted with it.
  auto session_caller = [&]() -> absl::StatusOr<Caller> {
    if (data_plane_ == nullptr) return NoDataPlane();
    if (!data_plane_->options().expose_arena) return ArenaNotExposed();
    ASSIGN_OR_RETURN(const uint64_t owner, data_plane_->SessionOwner(session_id));
    // Opening a session needs only read rights (OpenDataPlane): a put by
    // message cannot show write rights on the shared namespace.
    if (owner == access::kSharedTag && op != wire::kMappedGetOp) {
      return absl::PermissionDeniedError(
          "request message: puts into the shared namespace go by RPC");
    }
    return Caller{.tenant = owner, .admin = false, .name = ""};
  };
  // Whether a request's session field names the message's own session
  // (compared parsed: this runs for every message).
  auto own = [&](absl::string_view named) {
    const absl::StatusOr<wire::SessionId> id = wire::SessionId::FromBytes(named);
    return id.ok() && *id == session_id;
  };
  switch (op) {
    case wire::kMappedGetOp: {
      v1::BatchGetRequest request;
      RETURN_IF_ERROR(parse(&request));
      if (request.has_region() || !own(request.arena_session_id())) {
        return absl::InvalidArgumentError(
            "request message: a get by message reads its own session's arena, with no region");
      }
      // The keys are validated first, then moved to the caller's key space.
      ASSIGN_OR_RETURN(std::vector<PageKey> keys, GetKeys(Caller(), request));
      ASSIGN_OR_RETURN(const Caller caller, session_caller());
      for (PageKey& key : keys) key.tenant = caller.tenant;
      v1::BatchGetResponse response;
      RETURN_IF_ERROR(
          DoBatchGetFromArena(caller, request.arena_session_id(), keys, /*withhold_disk=*/true,
                              &response));
      return response.SerializeAsString();
    }
    case wire::kReservePutOp: {
      v1::ReservePutRequest request;
      RETURN_IF_ERROR(parse(&request));
      if (!own(request.session_id()) || request.tagged()) {
        return absl::InvalidArgumentError(
            "request message: a put by message reserves in its own session, not tagged");
      }
      ASSIGN_OR_RETURN(const Caller caller, session_caller());
      v1::ReservePutResponse response;
      RETURN_IF_ERROR(DoReservePut(caller, request, /*make_room=*/false, &response));
      return response.SerializeAsString();
    }
    case wire::kCommitPutOp: {
      v1::CommitPutRequest request;
      RETURN_IF_ERROR(parse(&request));
      if (!own(request.session_id())) {
        return absl::InvalidArgumentError(
            "request message: a put by message commits in its own session");
      }
      ASSIGN_OR_RETURN(const Caller caller, session_caller());
      v1::BatchPutResponse response;
      RETURN_IF_ERROR(DoCommitPut(caller, request, /*may_wait=*/false, &response));
      return response.SerializeAsString();
    }
    default:
      return absl::UnimplementedError(absl::StrFormat("request message op %d is unknown", op));
  }
}

absl::Status KvStoreService::DoBatchGetFromArena(const Caller& caller,
                                                 absl::string_view session_id,
                                                 absl::Span<const PageKey> keys,
                                                 bool withhold_disk,
                                                 v1::BatchGetResponse* response) {
  RETURN_IF_ERROR(CheckSession(caller, session_id).status());
  if (!data_plane_->options().expose_arena) return ArenaNotExposed();
  const absl::Span<const uint8_t> arena = store_->RamRegion();
  // The client copies and checks RAM pages itself (store.proto: no lease
  // outlives the response), so the store does not hash them here.
  auto locate = [&](absl::Span<const GetResult> results,
                    absl::Span<const absl::Span<const uint8_t>> bytes) -> absl::Status {
    RETURN_IF_ERROR(AddGotPages(keys, results, response));
    for (int i = 0; i < response->pages_size(); ++i) {
      v1::GotPage* page = response->mutable_pages(i);
      if (page->status() != v1::PAGE_STATUS_OK) continue;
      const absl::Span<const uint8_t> data = bytes[i];
      if (results[i].tier == Tier::kRam && data.data() >= arena.data() &&
          data.data() + data.size() <= arena.data() + arena.size()) {
        page->set_in_arena(true);
        page->set_arena_offset(static_cast<uint64_t>(data.data() - arena.data()));
      } else if (withhold_disk) {
        page->set_bytes_withheld(true);
      } else {
        page->set_inline_data(AsString(data));
      }
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(
      store_
          ->BatchGetInPlace(keys, locate,
                            {.ram_check = Store::RamCheck::kCaller, .skip_disk = withhold_disk})
          .status());
  CountGot(BytePath::kMapped, *response);
  return absl::OkStatus();
}

absl::Status KvStoreService::DoBatchGetToRegion(const Caller& caller,
                                                const v1::DataPlaneRegion& region,
                                                absl::Span<const PageKey> keys,
                                                v1::BatchGetResponse* response) {
  ASSIGN_OR_RETURN(const wire::SessionId session, CheckRegion(caller, region));
  // The transfers run inside the callback: the leases it runs under keep
  // every RAM page's slot unchanged until they are complete.
  auto transfer = [&](absl::Span<const GetResult> results,
                      absl::Span<const absl::Span<const uint8_t>> bytes) -> absl::Status {
    RETURN_IF_ERROR(AddGotPages(keys, results, response));
    return WriteRegion(region, session, bytes, response);
  };
  RETURN_IF_ERROR(store_->BatchGetInPlace(keys, transfer).status());
  CountGot(BytePath::kDataPlane, *response);
  return absl::OkStatus();
}

absl::Status KvStoreService::SendToRegion(const v1::DataPlaneRegion& region,
                                          const wire::SessionId& session,
                                          absl::Span<const absl::Span<const uint8_t>> bytes,
                                          v1::BatchGetResponse* response) {
  const uint64_t slot = region.slot_bytes();
  if (static_cast<uint64_t>(response->pages_size()) > region.bytes() / slot) {
    return absl::InvalidArgumentError(
        absl::StrFormat("region: %d slots of %d bytes overrun its %d bytes",
                        response->pages_size(), slot, region.bytes()));
  }
  std::vector<ucx::SendSegment> sends;
  for (int i = 0; i < response->pages_size(); ++i) {
    v1::GotPage* page = response->mutable_pages(i);
    if (page->status() != v1::PAGE_STATUS_OK) continue;
    const absl::Span<const uint8_t> data = bytes[i];
    if (data.size() > slot) {
      page->set_inline_data(AsString(data));
      continue;
    }
    sends.push_back({.local = data.data(), .bytes = data.size(), .tag = wire::PageTag(region.tag(), i)});
    page->set_in_region(true);
    page->set_region_offset(i * slot);
  }
  if (sends.empty()) return absl::OkStatus();
  const absl::Time deadline =
      absl::Now() + absl::Milliseconds(data_plane_->options().transfer_timeout_ms);
  return data_plane_->SendToClient(session, sends, deadline);
}

absl::Status KvStoreService::WriteRegion(const v1::DataPlaneRegion& region,
                                         const wire::SessionId& session,
                                         absl::Span<const absl::Span<const uint8_t>> bytes,
                                         v1::BatchGetResponse* response) {
  if (region.tag() != 0) return SendToRegion(region, session, bytes, response);
  std::vector<UcxDataPlane::RegionWrite> writes;
  uint64_t cursor = 0;
  for (int i = 0; i < response->pages_size(); ++i) {
    v1::GotPage* page = response->mutable_pages(i);
    if (page->status() != v1::PAGE_STATUS_OK) continue;
    const absl::Span<const uint8_t> data = bytes[i];
    const uint64_t offset = (cursor + kRegionAlignBytes - 1) / kRegionAlignBytes * kRegionAlignBytes;
    if (offset + data.size() <= region.bytes()) {
      writes.push_back({.bytes = data.data(), .size = data.size(), .region_offset = offset});
      page->set_in_region(true);
      page->set_region_offset(offset);
      cursor = offset + data.size();
    } else {
      page->set_inline_data(AsString(data));
    }
  }
  if (writes.empty()) return absl::OkStatus();
  const absl::Time deadline =
      absl::Now() + absl::Milliseconds(data_plane_->options().transfer_timeout_ms);
  return data_plane_->WriteToRegion(session, region.address(), region.rkey(), writes, deadline);
}

grpc::ServerUnaryReactor* KvStoreService::OpenDataPlane(grpc::CallbackServerContext* context,
                                                        const v1::OpenDataPlaneRequest* request,
                                                        v1::OpenDataPlaneResponse* response) {
  // Read rights suffice: what a session may do is checked per call, and
  // puts by message into the shared namespace are refused (ServeMessage).
  absl::StatusOr<Caller> caller = authenticator_.Authenticate(*context, Need::kRead);
  if (!caller.ok()) return Respond(context, [&] { return caller.status(); });
  // The probe and the endpoint's creation wait on UCX.
  return RespondAfterWaiting(
      [this, caller = *std::move(caller), request, response](InflightBytes::Grant*) {
        return DoOpenDataPlane(caller, *request, response);
      });
}

grpc::ServerUnaryReactor* KvStoreService::CloseDataPlane(
    grpc::CallbackServerContext* context, const v1::CloseDataPlaneRequest* request,
    v1::CloseDataPlaneResponse* /*response*/) {
  absl::StatusOr<Caller> caller = authenticator_.Authenticate(*context, Need::kWrite);
  if (!caller.ok()) return Respond(context, [&] { return caller.status(); });
  // Closing the endpoint waits on UCX.
  return RespondAfterWaiting([this, caller = *std::move(caller), request](InflightBytes::Grant*) {
    return DoCloseDataPlane(caller, *request);
  });
}

grpc::ServerUnaryReactor* KvStoreService::ReservePut(grpc::CallbackServerContext* context,
                                                     const v1::ReservePutRequest* request,
                                                     v1::ReservePutResponse* response) {
  return Respond(context, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(const Caller caller, authenticator_.Authenticate(*context, Need::kWrite));
    return DoReservePut(caller, *request, /*make_room=*/true, response);
  });
}

grpc::ServerUnaryReactor* KvStoreService::CommitPut(grpc::CallbackServerContext* context,
                                                    const v1::CommitPutRequest* request,
                                                    v1::BatchPutResponse* response) {
  absl::StatusOr<Caller> caller = authenticator_.Authenticate(*context, Need::kWrite);
  if (!caller.ok()) return Respond(context, [&] { return caller.status(); });
  // A tagged transfer's commit waits for its receives.
  return RespondAfterWaiting(
      [this, caller = *std::move(caller), request, response](InflightBytes::Grant*) {
        return DoCommitPut(caller, *request, /*may_wait=*/true, response);
      });
}

grpc::ServerUnaryReactor* KvStoreService::AbortPut(grpc::CallbackServerContext* context,
                                                   const v1::AbortPutRequest* request,
                                                   v1::AbortPutResponse* /*response*/) {
  return Respond(context, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(const Caller caller, authenticator_.Authenticate(*context, Need::kWrite));
    return DoAbortPut(caller, *request);
  });
}

}  // namespace kvtier::store
