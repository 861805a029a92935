// KvStoreService's local lanes (kvstore/dataplane/local_lanes.h): the
// OpenLocalLane RPC and the requests lanes carry, as thin adapters.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/checksum.h"
#include "common/status_macros.h"
#include "kvstore/service/service.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/local_lane.h"

namespace kvtier::store {

absl::Status KvStoreService::StartLocalLanes(const LocalLaneOptions& options) {
  if (lanes_ != nullptr) return absl::FailedPreconditionError("local lanes run already");
  ASSIGN_OR_RETURN(lanes_, LocalLanes::Start(options, [this](const LaneOwner& owner, uint32_t op,
                                                             absl::string_view request,
                                                             absl::Span<uint8_t> segment) {
                     return ServeLane(owner, op, request, segment);
                   }));
  return absl::OkStatus();
}

void KvStoreService::CloseLocalLanes() {
  if (lanes_ != nullptr) lanes_->CloseAll();
}

absl::Status KvStoreService::DoOpenLocalLane(const Caller& caller, bool may_write,
                                             v1::OpenLocalLaneResponse* response) {
  if (lanes_ == nullptr) {
    return absl::FailedPreconditionError("this server runs without local lanes");
  }
  ASSIGN_OR_RETURN(LocalLanes::Ticket ticket,
                   lanes_->Issue(LaneOwner{.tenant = caller.tenant,
                                           .admin = caller.admin,
                                           .may_write = may_write,
                                           .name = caller.name}));
  response->set_socket_name(std::move(ticket.socket_name));
  response->set_ticket(std::move(ticket.ticket));
  response->set_server_proof(std::move(ticket.server_proof));
  return absl::OkStatus();
}

absl::StatusOr<std::string> KvStoreService::ServeLane(const LaneOwner& owner, uint32_t op,
                                                      absl::string_view bytes,
                                                      absl::Span<uint8_t> segment) {
  auto parse = [bytes](google::protobuf::MessageLite* request) -> absl::Status {
    if (!request->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::InvalidArgumentError(
          absl::StrCat("local lane: not a ", request->GetTypeName()));
    }
    return absl::OkStatus();
  };
  const Caller caller{.tenant = owner.tenant, .admin = owner.admin, .name = owner.name};
  switch (op) {
    case wire::kLanePutOp: {
      v1::BatchPutRequest request;
      RETURN_IF_ERROR(parse(&request));
      if (!owner.may_write) {
        return absl::PermissionDeniedError(
            "local lane: opened with read rights only on this namespace");
      }
      if (request.has_region()) {
        return absl::InvalidArgumentError("local lane: a put names offsets in the segment, no region");
      }
      v1::BatchPutResponse response;
      RETURN_IF_ERROR(DoBatchPutFromSegment(caller, request, segment, &response));
      return response.SerializeAsString();
    }
    case wire::kLaneGetOp: {
      v1::BatchGetRequest request;
      RETURN_IF_ERROR(parse(&request));
      if (request.has_region() || request.arena_session_id() != 0) {
        return absl::InvalidArgumentError(
            "local lane: a get is written into the segment, with no region or arena session");
      }
      v1::BatchGetResponse response;
      RETURN_IF_ERROR(DoBatchGetToSegment(caller, request, segment, &response));
      return response.SerializeAsString();
    }
    default:
      return absl::UnimplementedError(absl::StrFormat("local lane: op %d is unknown", op));
  }
}

absl::Status KvStoreService::DoBatchPutFromSegment(const Caller& caller,
                                                   const v1::BatchPutRequest& request,
                                                   absl::Span<const uint8_t> segment,
                                                   v1::BatchPutResponse* response) {
  std::vector<PutSpec> specs;
  RETURN_IF_ERROR(SpecsFromProto(caller, request.pages(), /*inline_bytes=*/false, &specs));
  ASSIGN_OR_RETURN(const std::vector<uint64_t> offsets,
                   PageOffsetsWithin(request, specs, segment.size(), "segment"));
  std::vector<absl::Span<const uint8_t>> data;
  data.reserve(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    data.push_back(segment.subspan(offsets[i], specs[i].layout.PageBytes()));
  }
  // The client may change its segment while the store copies it: Commit
  // verifies each page's checksum on the copy in the arena, which only the
  // server writes, so a page is stored exactly as its checksum says or not
  // at all (DATA_LOSS).
  ASSIGN_OR_RETURN(std::vector<PutResult> results, store_->BatchPut(specs, data));
  uint64_t bytes = 0;
  for (const auto& d : data) bytes += d.size();
  counters_.AddPut(BytePath::kLane, bytes);
  for (const PutResult& r : results) response->add_results()->set_already_present(r.already_present);
  return absl::OkStatus();
}

absl::Status KvStoreService::DoBatchGetToSegment(const Caller& caller,
                                                 const v1::BatchGetRequest& request,
                                                 absl::Span<uint8_t> segment,
                                                 v1::BatchGetResponse* response) {
  ASSIGN_OR_RETURN(std::vector<PageKey> keys, GetKeys(caller, request));
  // Pages that do not fit the segment come inline: they count against the
  // bytes replies may hold, as an inline get's do.
  const Store::StoredBytes stored = store_->BytesOf(keys);
  const uint64_t inline_bound = stored.ram + stored.disk_only > segment.size()
                                    ? stored.ram + stored.disk_only - segment.size()
                                    : 0;
  ASSIGN_OR_RETURN(InflightBytes::Grant grant, inflight_.Acquire(inline_bound, "BatchGet"));
  // RAM pages are copied where they lie, under the read's leases, and
  // hashed while they are copied (one pass); a page whose copy does not
  // hash to its checksum is withheld, and the client asks for it by RPC,
  // whose verifying read drops a corrupt page (PAGE_STATUS_LOST).
  auto copy = [&](absl::Span<const GetResult> results,
                  absl::Span<const absl::Span<const uint8_t>> bytes) -> absl::Status {
    RETURN_IF_ERROR(AddGotPages(keys, results, response));
    uint64_t cursor = 0;
    for (int i = 0; i < response->pages_size(); ++i) {
      v1::GotPage* page = response->mutable_pages(i);
      if (page->status() != v1::PAGE_STATUS_OK) continue;
      const absl::Span<const uint8_t> data = bytes[i];
      const uint64_t offset =
          (cursor + wire::kLaneAlignBytes - 1) / wire::kLaneAlignBytes * wire::kLaneAlignBytes;
      if (offset > segment.size() || data.size() > segment.size() - offset) {
        page->set_inline_data(data.data(), data.size());
        continue;
      }
      if (CopyWithChecksum(segment.data() + offset, data.data(), data.size()) !=
          results[i].checksum) {
        page->set_bytes_withheld(true);
        continue;
      }
      page->set_in_region(true);
      page->set_region_offset(offset);
      cursor = offset + data.size();
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(store_
                      ->BatchGetInPlace(keys, copy, {.ram_check = Store::RamCheck::kCaller,
                                                     .skip_disk = false})
                      .status());
  CountGot(BytePath::kLane, *response);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KvStoreService::OpenLocalLane(grpc::CallbackServerContext* context,
                                                        const v1::OpenLocalLaneRequest* /*request*/,
                                                        v1::OpenLocalLaneResponse* response) {
  return Respond(context, [&]() -> absl::Status {
    // Read rights open a lane; its puts need the write rights this caller
    // had when it opened it.
    ASSIGN_OR_RETURN(const Caller caller, authenticator_.Authenticate(*context, Need::kRead));
    const bool may_write = authenticator_.Authenticate(*context, Need::kWrite).ok();
    return DoOpenLocalLane(caller, may_write, response);
  });
}

}  // namespace kvtier::store
