// KvStoreService's local lanes (kvstore/dataplane/local_lanes.h): the
// OpenLocalLane RPC and the requests lanes carry, as thin adapters.
#include <algorithm>
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
                                                             absl::Span<uint8_t> segment,
                                                             const ClientMemory* client) {
                     return ServeLane(owner, op, request, segment, client);
                   }));
  return absl::OkStatus();
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
                                           .name = caller.name},
                                 [&] { return authenticator_.IsCurrent(caller); }));
  response->set_socket_name(std::move(ticket.socket_name));
  response->set_ticket(std::move(ticket.ticket));
  response->set_server_proof(std::move(ticket.server_proof));
  return absl::OkStatus();
}

absl::StatusOr<std::string> KvStoreService::ServeLane(const LaneOwner& owner, uint32_t op,
                                                      absl::string_view bytes,
                                                      absl::Span<uint8_t> segment,
                                                      const ClientMemory* client) {
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
      RETURN_IF_ERROR(DoBatchPutFromLane(caller, request, segment, client, &response));
      return response.SerializeAsString();
    }
    case wire::kLaneGetOp: {
      v1::BatchGetRequest request;
      RETURN_IF_ERROR(parse(&request));
      if (request.has_region() || !request.arena_session_id().empty()) {
        return absl::InvalidArgumentError(
            "local lane: a get is written into the segment, with no region or arena session");
      }
      v1::BatchGetResponse response;
      RETURN_IF_ERROR(DoBatchGetToLane(caller, request, segment, client, &response));
      return response.SerializeAsString();
    }
    default:
      return absl::UnimplementedError(absl::StrFormat("local lane: op %d is unknown", op));
  }
}

absl::Status KvStoreService::DoBatchPutFromLane(const Caller& caller,
                                                const v1::BatchPutRequest& request,
                                                absl::Span<const uint8_t> segment,
                                                const ClientMemory* client,
                                                v1::BatchPutResponse* response) {
  std::vector<PutSpec> specs;
  RETURN_IF_ERROR(SpecsFromProto(caller, request.pages(), /*inline_bytes=*/false, &specs));
  const auto direct = static_cast<size_t>(
      std::count_if(request.pages().begin(), request.pages().end(),
                    [](const v1::PutPage& page) { return page.client_address() != 0; }));
  uint64_t bytes = 0;
  for (const PutSpec& spec : specs) bytes += spec.layout.PageBytes();
  std::vector<PutResult> results;
  if (direct > 0) {
    if (direct != specs.size()) {
      return absl::InvalidArgumentError(
          "local lane: a put names every page by client_address or none");
    }
    if (client == nullptr) {
      return absl::FailedPreconditionError(
          "local lane: this lane has no direct transfers; put through the segment");
    }
    // One copy from the client's memory into the reserved slots (each its
    // page's size); Commit verifies each page there, on memory only the
    // server writes.
    ASSIGN_OR_RETURN(results, store_->BatchPutFilled(specs, [&](const Reservation& reservation) {
      std::vector<ClientRange> from;
      std::vector<absl::Span<uint8_t>> to;
      for (size_t i = 0; i < reservation.size(); ++i) {
        const absl::Span<uint8_t> slot = reservation.buffer(i);
        if (slot.empty()) continue;  // stored already
        from.push_back({.address = request.pages(static_cast<int>(i)).client_address(),
                        .bytes = slot.size()});
        to.push_back(slot);
      }
      return client->Read(from, to);
    }));
  } else {
    ASSIGN_OR_RETURN(const std::vector<uint64_t> offsets,
                     PageOffsetsWithin(request, specs, segment.size(), "segment"));
    std::vector<absl::Span<const uint8_t>> data;
    data.reserve(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      data.push_back(segment.subspan(offsets[i], specs[i].layout.PageBytes()));
    }
    // The client may change its segment while the store copies it: the
    // store hashes each page on its copy in the arena, which only the
    // server writes, so a page is stored exactly as its checksum says or
    // not at all (DATA_LOSS).
    ASSIGN_OR_RETURN(results, store_->BatchPut(specs, data));
  }
  counters_.AddPut(BytePath::kLane, bytes);
  for (const PutResult& r : results) response->add_results()->set_already_present(r.already_present);
  return absl::OkStatus();
}

absl::Status KvStoreService::DoBatchGetToLane(const Caller& caller,
                                              const v1::BatchGetRequest& request,
                                              absl::Span<uint8_t> segment,
                                              const ClientMemory* client,
                                              v1::BatchGetResponse* response) {
  ASSIGN_OR_RETURN(std::vector<PageKey> keys, GetKeys(caller, request));
  const bool direct = request.lane_destinations_size() > 0;
  if (direct && request.lane_destinations_size() != request.keys_size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("local lane: %d lane_destinations for %d keys",
                        request.lane_destinations_size(), request.keys_size()));
  }
  if (direct && client == nullptr) {
    return absl::FailedPreconditionError(
        "local lane: this lane has no direct transfers; get without lane_destinations");
  }
  // Pages that do not fit the segment come inline: they count against the
  // bytes replies may hold, as an inline get's do. A direct get sends none
  // inline (it withholds them instead), since what the client's buffers
  // will take is not known before the read.
  const Store::StoredBytes stored = store_->BytesOf(keys);
  const uint64_t inline_bound = !direct && stored.ram + stored.disk_only > segment.size()
                                    ? stored.ram + stored.disk_only - segment.size()
                                    : 0;
  ASSIGN_OR_RETURN(InflightBytes::Grant grant, inflight_.Acquire(inline_bound, "BatchGet"));
  // RAM pages are copied where they lie, under the read's leases. Into the
  // segment they are hashed while they are copied (one pass); a page whose
  // copy does not hash to its checksum is withheld, and the client asks for
  // it by RPC, whose verifying read drops a corrupt page
  // (PAGE_STATUS_LOST). Into the client's own buffers they go in one copy
  // by the kernel, and the client checks them.
  auto copy = [&](absl::Span<const GetResult> results,
                  absl::Span<const absl::Span<const uint8_t>> bytes) -> absl::Status {
    RETURN_IF_ERROR(AddGotPages(keys, results, response));
    std::vector<absl::Span<const uint8_t>> direct_from;
    std::vector<ClientRange> direct_to;
    uint64_t cursor = 0;
    for (int i = 0; i < response->pages_size(); ++i) {
      v1::GotPage* page = response->mutable_pages(i);
      if (page->status() != v1::PAGE_STATUS_OK) continue;
      const absl::Span<const uint8_t> data = bytes[i];
      if (direct && request.lane_destinations(i).bytes() == data.size()) {
        direct_from.push_back(data);
        direct_to.push_back({.address = request.lane_destinations(i).address(),
                             .bytes = data.size()});
        page->set_in_destination(true);
        continue;
      }
      const uint64_t offset =
          (cursor + wire::kLaneAlignBytes - 1) / wire::kLaneAlignBytes * wire::kLaneAlignBytes;
      if (offset > segment.size() || data.size() > segment.size() - offset) {
        if (direct) {
          page->set_bytes_withheld(true);
        } else {
          page->set_inline_data(data.data(), data.size());
        }
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
    if (direct_from.empty()) return absl::OkStatus();
    return client->Write(direct_from, direct_to);
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
