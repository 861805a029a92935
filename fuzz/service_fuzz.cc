// Every RPC of the store's service, every request message of the data
// plane and every request of a local lane, with fuzzed bytes: through the
// service's validation into a real TieredStore on a temporary directory,
// with a real UCX data plane and one open session (a request naming
// session 1 is given that session's id, so the fuzzer reaches what lies
// behind the session check). Lane requests run with and without direct
// transfers; direct ones reach the memory of a child process kept for
// that, so whatever addresses they name, the fuzzer's memory is not
// theirs. Nothing may
// crash, leak or trip a sanitizer; every answer is a status.
//
// Input: one byte picks the call, one byte the message op, the rest is the
// serialized request.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "kvstore/core/store.h"
#include "kvstore/dataplane/client_memory.h"
#include "kvstore/dataplane/ucx_data_plane.h"
#include "kvstore/service/service.h"
#include "kvtier/v1/data_plane.h"
#include "ucx/context.h"
#include "ucx/worker.h"

namespace kvtier::fuzz {
namespace {

// The same address in the child (a fork's copy): the probe's bytes.
char probe[16] = "kvtier-fuzzlane";

// A child process that connects to us and then waits to die with us; its
// memory, attached as a lane client's. Null when the kernel refuses.
std::unique_ptr<store::ClientMemory> SacrificialClient() {
  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string name = "kvtier-service-fuzz-" + std::to_string(getpid());
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (listener < 0 || bind(listener, reinterpret_cast<const sockaddr*>(&addr), len) != 0 ||
      listen(listener, 1) != 0) {
    return nullptr;
  }
  const pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(s, reinterpret_cast<const sockaddr*>(&addr), len) != 0) _exit(1);
    while (true) pause();
  }
  const int fd = child > 0 ? accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : -1;
  close(listener);
  if (fd < 0) return nullptr;
  absl::StatusOr<std::unique_ptr<store::ClientMemory>> memory = store::ClientMemory::Attach(
      fd, reinterpret_cast<uintptr_t>(probe),
      {reinterpret_cast<const uint8_t*>(probe), sizeof(probe)});
  close(fd);  // the pidfd holds the process
  return memory.ok() ? *std::move(memory) : nullptr;
}

struct Harness {
  Harness() {
    store::StoreOptions options;
    options.data_dir = ScratchDir("service") + "/data";
    options.ram.capacity_bytes = 16 << 20;
    options.disk.capacity_bytes = 32 << 20;
    options.max_batch_pages = 64;
    options.max_lookup_pages = 256;
    options.max_lookup_entries = 4096;
    options.max_pins = 1024;
    options.verify_on_open = false;
    store = *store::Store::Open(options);
    store::DataPlaneOptions plane_options;
    plane_options.address_probe = KVTIER_UCX_PROBE_PATH;
    plane_options.transfer_timeout_ms = 1000;
    plane_options.max_sessions = 4;
    plane_options.max_pending_transfers = 64;
    // Every arena path open to the fuzzer too.
    plane_options.expose_arena = true;
    plane = *store::UcxDataPlane::Create(store.get(), plane_options);
    service = std::make_unique<store::KvStoreService>(
        store.get(), store::ServiceLimits::FromStoreOptions(options), plane.get());
    session = plane->Open(client_worker->address())->session_id;
    session_bytes = session.Bytes();
  }

  // The client side of the one session.
  std::unique_ptr<ucx::UcxContext> client_context = *ucx::UcxContext::Create(ucx::UcxOptions{});
  std::unique_ptr<ucx::UcxWorker> client_worker = *ucx::UcxWorker::Create(*client_context);
  ucx::UcxProgressThread client_progress{client_worker.get()};
  std::unique_ptr<store::Store> store;
  std::unique_ptr<store::UcxDataPlane> plane;
  std::unique_ptr<store::KvStoreService> service;
  wire::SessionId session;
  std::string session_bytes;  // as the RPCs carry it
  std::unique_ptr<store::ClientMemory> lane_client = SacrificialClient();
};

// The one byte "\x01" stands for the open session's id (any other id of
// 16 bytes is almost surely unknown, and of another length refused).
inline bool StandsForTheSession(const std::string& id) { return id == "\x01"; }
template <typename Request>
void UseSession(Request& request, const std::string& session) {
  if (StandsForTheSession(request.session_id())) request.set_session_id(session);
}

// The same in a request message's bytes, where they parse as its op's
// request (`mutable_id`: its session field).
template <typename Request>
void UseSessionIn(std::string* message, const std::string& session,
                  std::string* (Request::*mutable_id)()) {
  Request request;
  if (!request.ParseFromString(*message)) return;
  std::string* id = (request.*mutable_id)();
  if (!StandsForTheSession(*id)) return;
  *id = session;
  *message = request.SerializeAsString();
}

}  // namespace
}  // namespace kvtier::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  static fuzz::Harness* h = new fuzz::Harness();
  if (size < 2) return 0;
  const uint8_t call = data[0];
  const uint32_t op = data[1];
  const std::string bytes(reinterpret_cast<const char*>(data + 2), size - 2);
  store::KvStoreService& s = *h->service;
  // The session is tenant 0's: a call of tenant 1 must find it absent.
  const store::Caller caller{.tenant = op % 4 == 3 ? 1u : 0u, .admin = true, .name = ""};
  switch (call % 16) {
    case 0: {
      v1::LookupRequest r;
      v1::LookupResponse out;
      if (r.ParseFromString(bytes)) s.DoLookup(caller, r, &out).IgnoreError();
      break;
    }
    case 1: {
      v1::BatchPutRequest r;
      v1::BatchPutResponse out;
      if (!r.ParseFromString(bytes)) break;
      if (r.has_region()) fuzz::UseSession(*r.mutable_region(), h->session_bytes);
      s.DoBatchPut(caller, r, &out).IgnoreError();
      break;
    }
    case 2: {
      v1::BatchGetRequest r;
      v1::BatchGetResponse out;
      if (!r.ParseFromString(bytes)) break;
      if (r.has_region()) fuzz::UseSession(*r.mutable_region(), h->session_bytes);
      if (fuzz::StandsForTheSession(r.arena_session_id())) {
        r.set_arena_session_id(h->session_bytes);
      }
      s.DoBatchGet(caller, r, &out).IgnoreError();
      break;
    }
    case 3: {
      v1::DeleteRequest r;
      v1::DeleteResponse out;
      if (r.ParseFromString(bytes)) s.DoDelete(caller, r, &out).IgnoreError();
      break;
    }
    case 4: {
      v1::PinRequest r;
      v1::PinResponse out;
      if (r.ParseFromString(bytes)) s.DoPin(caller, r, &out).IgnoreError();
      break;
    }
    case 5: {
      v1::UnpinRequest r;
      if (r.ParseFromString(bytes)) s.DoUnpin(caller, r).IgnoreError();
      break;
    }
    case 6: {
      v1::StatsResponse out;
      s.DoStats(&out).IgnoreError();
      break;
    }
    case 7: {
      // Each one runs the address probe, a process of its own: rarer.
      if (op % 8 != 0) break;
      v1::OpenDataPlaneRequest r;
      v1::OpenDataPlaneResponse out;
      if (r.ParseFromString(bytes) && s.DoOpenDataPlane(caller, r, &out).ok()) {
        v1::CloseDataPlaneRequest close;
        close.set_session_id(out.session_id());
        s.DoCloseDataPlane(caller, close).IgnoreError();
      }
      break;
    }
    case 8: {
      v1::CloseDataPlaneRequest r;
      // Closing the open session would end the harness's reach.
      if (r.ParseFromString(bytes) && r.session_id() != h->session_bytes) {
        s.DoCloseDataPlane(caller, r).IgnoreError();
      }
      break;
    }
    case 9: {
      v1::ReservePutRequest r;
      v1::ReservePutResponse out;
      if (!r.ParseFromString(bytes)) break;
      fuzz::UseSession(r, h->session_bytes);
      if (s.DoReservePut(caller, r, /*make_room=*/true, &out).ok()) {
        v1::AbortPutRequest abort;
        abort.set_session_id(r.session_id());
        abort.set_transfer_id(out.transfer_id());
        s.DoAbortPut(caller, abort).IgnoreError();
      }
      break;
    }
    case 10: {
      v1::CommitPutRequest r;
      v1::BatchPutResponse out;
      if (!r.ParseFromString(bytes)) break;
      fuzz::UseSession(r, h->session_bytes);
      s.DoCommitPut(caller, r, /*may_wait=*/false, &out).IgnoreError();
      break;
    }
    case 11: {
      v1::AbortPutRequest r;
      if (!r.ParseFromString(bytes)) break;
      fuzz::UseSession(r, h->session_bytes);
      s.DoAbortPut(caller, r).IgnoreError();
      break;
    }
    case 14: {
      // A local lane's request against a segment, for a caller with or
      // without write rights, on a lane with or without direct transfers.
      static auto* segment = new std::vector<uint8_t>(1 << 20);
      const store::LaneOwner owner{
          .tenant = caller.tenant, .admin = false, .may_write = (op & 4) == 0, .name = ""};
      const store::ClientMemory* client = (op & 8) != 0 ? h->lane_client.get() : nullptr;
      s.ServeLane(owner, op % 4, bytes, absl::MakeSpan(*segment), client)
          .status()
          .IgnoreError();
      break;
    }
    case 15: {
      // Another node's copy, into any tenant's key space.
      v1::ReplicaPutRequest r;
      v1::ReplicaPutResponse out;
      if (r.ParseFromString(bytes)) s.DoReplicaPut(r, &out).IgnoreError();
      break;
    }
    default: {
      // A request message on the open session, any op.
      std::string message = bytes;
      if (op % 5 == wire::kMappedGetOp) {
        fuzz::UseSessionIn(&message, h->session_bytes,
                           &v1::BatchGetRequest::mutable_arena_session_id);
      } else if (op % 5 == wire::kReservePutOp) {
        fuzz::UseSessionIn(&message, h->session_bytes,
                           &v1::ReservePutRequest::mutable_session_id);
      } else if (op % 5 == wire::kCommitPutOp) {
        fuzz::UseSessionIn(&message, h->session_bytes, &v1::CommitPutRequest::mutable_session_id);
      }
      s.ServeMessage(h->session, op % 5, message).status().IgnoreError();
      break;
    }
  }
  return 0;
}
