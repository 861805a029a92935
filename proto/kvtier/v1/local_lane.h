// Local lanes' wire contract beside store.proto (OpenLocalLane): how a
// client on the server's host moves page bytes through memory of its own
// that it hands the server, without the server handing out any of its own.
// kvstore/dataplane/DATA_PLANE.md, "Local lanes", says why and how.
//
// A lane is one connection to the server's abstract Unix socket
// (OpenLocalLaneResponse.socket_name) and one memory segment: a memfd the
// client created, sealed against shrinking, and passed with SCM_RIGHTS.
//
//   client -> server  LaneHello (+ the memfd as SCM_RIGHTS)
//   server -> client  LaneWelcome
//   then, one at a time:
//   client -> server  Frame(RequestHeader, serialized request)
//   server -> client  Frame(ReplyHeader, serialized response | error message)
//
// A frame is a FrameHeader (the byte count of what follows, at most
// LaneWelcome.max_frame_bytes) and that many bytes: the header, then the
// payload. Requests: kLanePutOp (a BatchPutRequest without region whose
// pages' region_offset name where each page's bytes lie in the segment; the
// server copies them into its memory and verifies each against its
// checksum) answered by a BatchPutResponse; kLaneGetOp (a BatchGetRequest
// without region or arena_session_id) answered by a BatchGetResponse whose
// OK pages the server wrote into the segment (in_region, region_offset,
// 64-byte aligned, one after another from offset 0) as far as they fit,
// the rest inline. The segment is the client's: the server never writes it
// outside a get's reply pages, and the client must not change it while a
// request is in flight (a put whose bytes change meanwhile fails its
// checksum; nothing else is at risk but the client's own pages).
//
// Direct transfers: a client whose hello names a probe address (where its
// own copy of the ticket lies) offers the server its memory; when the
// server can read the ticket there (ClientMemory: the peer process of the
// socket, same user, no ptrace restriction in the way) LaneWelcome.direct
// is 1, and then a put may name each page's bytes by its address in the
// client's memory (PutPage.client_address) and a get may name a buffer of
// the client's per key (BatchGetRequest.lane_destinations): the server
// copies between those and its own memory directly, one copy, and still
// verifies what it stores; the client verifies what it gets.
//
// Headers travel as their in-memory bytes: both ends are the same build on
// one little-endian host, and a header of another size or magic is refused.
#ifndef KVTIER_PROTO_KVTIER_V1_LOCAL_LANE_H_
#define KVTIER_PROTO_KVTIER_V1_LOCAL_LANE_H_

#include <cstdint>

namespace kvtier::wire {

inline constexpr uint32_t kLaneMagic = 0x4c54564b;  // "KVTL"
inline constexpr uint32_t kLaneVersion = 2;
inline constexpr int kLaneSecretBytes = 16;

struct LaneHello {
  uint32_t magic = kLaneMagic;
  uint32_t version = kLaneVersion;
  // OpenLocalLaneResponse.ticket: single use, valid for a few seconds.
  uint8_t ticket[kLaneSecretBytes] = {};
  // Where this process keeps the same ticket bytes, to be read back by the
  // server for direct transfers; 0 asks for none.
  uint64_t probe_address = 0;
};
static_assert(sizeof(LaneHello) == 32);

struct LaneWelcome {
  uint32_t magic = kLaneMagic;
  int32_t code = 0;  // absl::StatusCode; 0: the lane is open
  // OpenLocalLaneResponse.server_proof when code is 0 (zeros otherwise): a
  // process that merely bound the same socket name cannot know it, so the
  // client writes no page into the segment before it has checked it.
  uint8_t server_proof[kLaneSecretBytes] = {};
  uint64_t segment_bytes = 0;  // the segment's size as the server mapped it
  uint32_t max_frame_bytes = 0;
  uint32_t direct = 0;  // 1: direct transfers are on for this lane
  char message[96] = {};  // why not, NUL-terminated, when code is not 0
};
static_assert(sizeof(LaneWelcome) == 136);

struct FrameHeader {
  uint32_t bytes = 0;  // what follows: the request or reply header + payload
};
static_assert(sizeof(FrameHeader) == 4);

inline constexpr uint32_t kLanePutOp = 1;
inline constexpr uint32_t kLaneGetOp = 2;

struct LaneRequestHeader {
  uint64_t request_id = 0;
  uint32_t op = 0;
  uint32_t reserved = 0;
};
static_assert(sizeof(LaneRequestHeader) == 16);

struct LaneReplyHeader {
  uint64_t request_id = 0;
  int32_t code = 0;  // absl::StatusCode; the payload is the error message unless 0
  uint32_t reserved = 0;
};
static_assert(sizeof(LaneReplyHeader) == 16);

// Where a get's pages go in the segment: each at the next multiple of this.
inline constexpr uint64_t kLaneAlignBytes = 64;

}  // namespace kvtier::wire

#endif  // KVTIER_PROTO_KVTIER_V1_LOCAL_LANE_H_
