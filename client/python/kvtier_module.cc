// The native part of the Python package `kvtier` (kvtier/__init__.py wraps
// it): kvtier._native.
//
//   layout = kvtier.PageLayout(page_size=16, n_kv_heads=8, head_dim=128, dtype="f16")
//   seed = kvtier.chain_seed(b"tenant", b"model", layout)
//   chain = kvtier.chain_hashes(seed, tokens, layout.page_size)   # 16-byte bytes each
//   client = kvtier.StoreClient("127.0.0.1:50051")
//   client.put_pages([(chain[0], 0)], layout, [page])     # any C-contiguous buffer
//   prefix, tiers = client.lookup(chain)
//   client.get_pages([(chain[0], 0)], [out])              # into writable buffers
//
// put_pages and get_pages hold the buffers' own memory (the buffer
// protocol), so page bytes are not copied into Python objects; batch_put
// and batch_get take and return bytes. Errors from the store raise
// kvtier.StoreError, whose `code` is the absl/gRPC status code name
// ("INVALID_ARGUMENT", "NOT_FOUND", ...). The GIL is released while an RPC
// is in flight.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "client/store_client.h"
#include "common/page_key.h"
#include "common/page_layout.h"

namespace py = pybind11;

namespace kvtier::python {
namespace {

PyObject* g_store_error = nullptr;

[[noreturn]] void Raise(const absl::Status& status) {
  py::object error = py::reinterpret_borrow<py::object>(g_store_error);
  py::object instance = error(std::string(status.message()));
  instance.attr("code") = absl::StatusCodeToString(status.code());
  PyErr_SetObject(g_store_error, instance.ptr());
  throw py::error_already_set();
}

template <typename T>
T ValueOrRaise(absl::StatusOr<T> v) {
  if (!v.ok()) Raise(v.status());
  return *std::move(v);
}

DType ParseDType(const std::string& name) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kFp8E4M3, DType::kInt8}) {
    if (name == DTypeName(d)) return d;
  }
  Raise(absl::InvalidArgumentError("unknown dtype '" + name +
                                   "' (f32, f16, bf16, fp8_e4m3, int8)"));
}

PageLayout MakeLayout(uint32_t page_size, uint32_t n_kv_heads, uint32_t head_dim,
                      const std::string& dtype) {
  PageLayout layout{.page_size = page_size, .n_kv_heads = n_kv_heads, .head_dim = head_dim,
                    .dtype = ParseDType(dtype)};
  if (absl::Status s = layout.Validate(); !s.ok()) Raise(s);
  return layout;
}

Hash128 HashFromBytes(const py::bytes& b) { return ValueOrRaise(Hash128::FromBytes(b)); }

py::bytes HashToBytes(const Hash128& h) { return py::bytes(h.CanonicalString()); }

PageKey KeyFromTuple(const std::tuple<py::bytes, uint32_t>& t) {
  return PageKey{.hash = HashFromBytes(std::get<0>(t)), .layer = std::get<1>(t)};
}

// A C-contiguous view of a Python buffer, held (and the exporter's memory
// pinned) until destroyed; destroyed with the GIL held.
class BufferView {
 public:
  BufferView(const py::handle& object, bool writable, size_t index) {
    const int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object.ptr(), &view_, flags) != 0) {
      PyErr_Clear();
      Raise(absl::InvalidArgumentError(absl::StrFormat(
          "pages[%d]: not a C-contiguous%s buffer (%s)", index, writable ? " writable" : "",
          std::string(py::str(py::type::handle_of(object).attr("__name__"))))));
    }
    held_ = true;
  }
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  ~BufferView() {
    if (held_) PyBuffer_Release(&view_);
  }
  uint8_t* data() const { return static_cast<uint8_t*>(view_.buf); }
  size_t size() const { return static_cast<size_t>(view_.len); }

 private:
  Py_buffer view_{};
  bool held_ = false;
};

std::vector<PageKey> ParseKeys(const std::vector<std::tuple<py::bytes, uint32_t>>& keys) {
  std::vector<PageKey> parsed;
  parsed.reserve(keys.size());
  for (const auto& k : keys) parsed.push_back(KeyFromTuple(k));
  return parsed;
}

// The pages of a call: a sequence of buffers, one per page, or one buffer
// (a 2-D array) cut into `count` equal pages.
class PageViews {
 public:
  PageViews(const py::object& pages, size_t count, bool writable) {
    if (PyObject_CheckBuffer(pages.ptr())) {
      whole_ = std::make_unique<BufferView>(pages, writable, 0);
      if (whole_->size() % count != 0) {
        Raise(absl::InvalidArgumentError(absl::StrFormat(
            "one buffer of %d bytes does not split into %d pages", whole_->size(), count)));
      }
      const size_t each = whole_->size() / count;
      for (size_t i = 0; i < count; ++i) spans_.emplace_back(whole_->data() + i * each, each);
      return;
    }
    const py::sequence sequence = py::reinterpret_borrow<py::sequence>(pages);
    if (!py::isinstance<py::sequence>(pages) || py::len(sequence) != count) {
      Raise(absl::InvalidArgumentError(absl::StrFormat(
          "%d keys but %s pages", count,
          py::isinstance<py::sequence>(pages) ? std::to_string(py::len(sequence)) : "no")));
    }
    for (size_t i = 0; i < count; ++i) {
      views_.push_back(std::make_unique<BufferView>(sequence[i], writable, i));
      spans_.emplace_back(views_.back()->data(), views_.back()->size());
    }
  }
  const std::vector<absl::Span<uint8_t>>& spans() const { return spans_; }

 private:
  std::unique_ptr<BufferView> whole_;
  std::vector<std::unique_ptr<BufferView>> views_;
  std::vector<absl::Span<uint8_t>> spans_;
};

const char* TierName(v1::Tier tier) {
  switch (tier) {
    case v1::TIER_RAM: return "ram";
    case v1::TIER_DISK: return "disk";
    default: return "none";
  }
}

const char* PageStatusName(v1::PageStatus status) {
  switch (status) {
    case v1::PAGE_STATUS_OK: return "ok";
    case v1::PAGE_STATUS_NOT_FOUND: return "not_found";
    case v1::PAGE_STATUS_LOST: return "lost";
    default: return "unspecified";
  }
}

// Every field of a stats message (nested messages as dicts), by name, so
// that the dict has whatever the server reports.
py::dict MessageToDict(const google::protobuf::Message& message) {
  py::dict d;
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const google::protobuf::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated()) continue;
    const char* name = field->name().c_str();
    switch (field->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE:
        d[name] = MessageToDict(reflection->GetMessage(message, field));
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT64:
        d[name] = reflection->GetUInt64(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT32:
        d[name] = reflection->GetUInt32(message, field);
        break;
      default:
        break;  // stats hold counters only
    }
  }
  return d;
}

class PyStoreClient {
 public:
  PyStoreClient(const std::string& target, int64_t deadline_ms, int max_attempts, bool tls,
                const std::string& tls_ca_file, const std::string& tls_cert_file,
                const std::string& tls_key_file, const std::string& tls_server_name,
                const std::string& token, const std::string& token_file, bool shared_namespace) {
    client::ClientOptions options;
    options.token = token;
    options.token_file = token_file;
    options.shared_namespace = shared_namespace;
    options.deadline_ms = deadline_ms;
    options.max_attempts = max_attempts;
    options.tls = tls;
    options.tls_ca_file = tls_ca_file;
    options.tls_cert_file = tls_cert_file;
    options.tls_key_file = tls_key_file;
    options.tls_server_name = tls_server_name;
    client_ = ValueOrRaise(client::StoreClient::Connect(target, options));
  }

  // pages: [(hash16, layer, PageLayout, bytes)] -> [already_present]
  std::vector<bool> BatchPut(
      const std::vector<std::tuple<py::bytes, uint32_t, PageLayout, py::bytes>>& pages) {
    std::vector<std::string> data;  // owns the bytes while the GIL is released
    std::vector<client::PutPage> puts;
    data.reserve(pages.size());
    puts.reserve(pages.size());
    for (const auto& [hash, layer, layout, bytes] : pages) {
      data.push_back(std::string(bytes));
      puts.push_back(client::PutPage{
          PageKey{.hash = HashFromBytes(hash), .layer = layer}, layout,
          absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.back().data()),
                                    data.back().size())});
    }
    return PutAll(puts);
  }

  // Stores `puts` with the GIL released -> [already_present].
  std::vector<bool> PutAll(const std::vector<client::PutPage>& puts) {
    absl::StatusOr<std::vector<client::PutOutcome>> out;
    {
      py::gil_scoped_release release;
      out = client_->BatchPut(puts);
    }
    std::vector<bool> present;
    for (const auto& o : ValueOrRaise(std::move(out))) present.push_back(o.already_present);
    return present;
  }

  // keys: [(hash16, layer)], pages: [buffer of layout.PageBytes()] ->
  // [already_present]. The buffers are read in place.
  std::vector<bool> PutPages(const std::vector<std::tuple<py::bytes, uint32_t>>& keys,
                             const PageLayout& layout, const py::object& pages) {
    if (keys.empty()) Raise(absl::InvalidArgumentError("put_pages: no keys"));
    const std::vector<PageKey> parsed = ParseKeys(keys);
    const PageViews views(pages, keys.size(), /*writable=*/false);
    std::vector<client::PutPage> puts;
    puts.reserve(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      const absl::Span<uint8_t> page = views.spans()[i];
      if (page.size() != layout.PageBytes()) {
        Raise(absl::InvalidArgumentError(
            absl::StrFormat("pages[%d]: %d bytes, but the layout's pages are %d", i,
                            page.size(), layout.PageBytes())));
      }
      puts.push_back(client::PutPage{parsed[i], layout, page});
    }
    return PutAll(puts);
  }

  // keys: [(hash16, layer)], out: [writable buffer] -> [status]. Pages
  // copied out of shared memory (lanes, a mapped arena) go straight into
  // their buffer; pages that came another way are copied into it.
  std::vector<std::string> GetPages(const std::vector<std::tuple<py::bytes, uint32_t>>& keys,
                                    const py::object& out) {
    if (keys.empty()) Raise(absl::InvalidArgumentError("get_pages: no keys"));
    const std::vector<PageKey> parsed = ParseKeys(keys);
    const PageViews views(out, keys.size(), /*writable=*/true);
    const std::vector<absl::Span<uint8_t>>& destinations = views.spans();
    std::vector<std::string> statuses(keys.size());
    absl::Status status;
    {
      py::gil_scoped_release release;
      absl::StatusOr<std::vector<client::GotPage>> got =
          client_->BatchGet(parsed, destinations[0].size(), destinations);
      status = got.status();
      for (size_t i = 0; status.ok() && i < got->size(); ++i) {
        const client::GotPage& page = (*got)[i];
        if (page.status != v1::PAGE_STATUS_OK) {
          statuses[i] = PageStatusName(page.status);
        } else if (page.in_destination) {
          statuses[i] = "ok";
        } else if (page.data.size() != destinations[i].size()) {
          statuses[i] = "size_mismatch";
        } else {
          std::memcpy(destinations[i].data(), page.data.data(), page.data.size());
          statuses[i] = "ok";
        }
      }
    }
    if (!status.ok()) Raise(status);
    return statuses;
  }

  // keys: [(hash16, layer)] -> [(status, tier, bytes or None)]
  py::list BatchGet(const std::vector<std::tuple<py::bytes, uint32_t>>& keys) {
    const std::vector<PageKey> parsed = ParseKeys(keys);
    absl::StatusOr<std::vector<client::GotPage>> got;
    {
      py::gil_scoped_release release;
      got = client_->BatchGet(parsed);
    }
    py::list out;
    for (auto& page : ValueOrRaise(std::move(got))) {
      py::object data = page.status == v1::PAGE_STATUS_OK ? py::object(py::bytes(page.data))
                                                          : py::object(py::none());
      out.append(py::make_tuple(PageStatusName(page.status), TierName(page.tier), data));
    }
    return out;
  }

  // -> (prefix_pages, [tier names, page-major])
  std::tuple<uint32_t, std::vector<std::string>> Lookup(const std::vector<py::bytes>& chain,
                                                        uint32_t layer_begin,
                                                        uint32_t layer_count) {
    std::vector<Hash128> hashes;
    for (const auto& h : chain) hashes.push_back(HashFromBytes(h));
    absl::StatusOr<client::LookupReply> reply;
    {
      py::gil_scoped_release release;
      reply = client_->Lookup(hashes, layer_begin, layer_count);
    }
    client::LookupReply r = ValueOrRaise(std::move(reply));
    std::vector<std::string> tiers;
    for (v1::Tier t : r.tiers) tiers.push_back(TierName(t));
    return {r.prefix_pages, tiers};
  }

  uint32_t Delete(const std::vector<std::tuple<py::bytes, uint32_t>>& keys, bool force) {
    const std::vector<PageKey> parsed = ParseKeys(keys);
    absl::StatusOr<uint32_t> n;
    {
      py::gil_scoped_release release;
      n = client_->Delete(parsed, force);
    }
    return ValueOrRaise(std::move(n));
  }

  // Pin ids are opaque bytes: b"" is "no pin", the server's are 16 bytes.
  py::bytes Pin(const std::vector<std::tuple<py::bytes, uint32_t>>& keys, uint64_t ttl_ms,
                const py::bytes& pin_id) {
    const std::vector<PageKey> parsed = ParseKeys(keys);
    const std::string existing(pin_id);
    absl::StatusOr<std::string> id;
    {
      py::gil_scoped_release release;
      id = client_->Pin(parsed, ttl_ms, existing);
    }
    return py::bytes(ValueOrRaise(std::move(id)));
  }

  void Unpin(const py::bytes& pin_id) {
    const std::string id(pin_id);
    absl::Status s;
    {
      py::gil_scoped_release release;
      s = client_->Unpin(id);
    }
    if (!s.ok()) Raise(s);
  }

  py::dict Stats() {
    absl::StatusOr<v1::StatsResponse> stats;
    {
      py::gil_scoped_release release;
      stats = client_->Stats();
    }
    return MessageToDict(ValueOrRaise(std::move(stats)));
  }

 private:
  std::unique_ptr<client::StoreClient> client_;
};

}  // namespace
}  // namespace kvtier::python

PYBIND11_MODULE(_native, m) {
  using namespace kvtier;
  using namespace kvtier::python;
  m.doc() = "kvtier store client and page-key chain";

  static py::exception<std::runtime_error> store_error(m, "StoreError");
  g_store_error = store_error.ptr();

  py::class_<PageLayout>(m, "PageLayout")
      .def(py::init(&MakeLayout), py::arg("page_size"), py::arg("n_kv_heads"),
           py::arg("head_dim"), py::arg("dtype") = "f16")
      .def_readonly("page_size", &PageLayout::page_size)
      .def_readonly("n_kv_heads", &PageLayout::n_kv_heads)
      .def_readonly("head_dim", &PageLayout::head_dim)
      .def_property_readonly("dtype", [](const PageLayout& l) { return DTypeName(l.dtype); })
      .def_property_readonly("page_bytes", &PageLayout::PageBytes)
      .def("__repr__", &PageLayout::DebugString);

  m.def(
      "chain_seed",
      [](const py::bytes& tenant_salt, const py::bytes& model_fingerprint,
         const PageLayout& layout) {
        return HashToBytes(KeyChain::Seed(std::string(tenant_salt),
                                          std::string(model_fingerprint), layout));
      },
      py::arg("tenant_salt"), py::arg("model_fingerprint"), py::arg("layout"),
      "h_{-1} of the key chain (16 canonical bytes).");
  m.def(
      "chain_hashes",
      [](const py::bytes& seed, const std::vector<uint32_t>& tokens, uint32_t page_size) {
        if (page_size == 0) Raise(absl::InvalidArgumentError("page_size must be > 0"));
        std::vector<py::bytes> out;
        for (const Hash128& h : KeyChain::Chain(HashFromBytes(seed), tokens, page_size)) {
          out.push_back(HashToBytes(h));
        }
        return out;
      },
      py::arg("seed"), py::arg("tokens"), py::arg("page_size"),
      "h_0, h_1, ... of every full page of `tokens`.");

  py::class_<PyStoreClient>(m, "StoreClient")
      .def(py::init<const std::string&, int64_t, int, bool, const std::string&,
                    const std::string&, const std::string&, const std::string&,
                    const std::string&, const std::string&, bool>(),
           py::arg("target"), py::arg("deadline_ms") = 30000, py::arg("max_attempts") = 4,
           py::arg("tls") = false, py::arg("tls_ca_file") = "", py::arg("tls_cert_file") = "",
           py::arg("tls_key_file") = "", py::arg("tls_server_name") = "",
           py::arg("token") = "", py::arg("token_file") = "",
           py::arg("shared_namespace") = false,
           "A client of kvtier-server at `target`. tls: connect with TLS; tls_ca_file: CAs "
           "(PEM) that sign the server's certificate (empty: the system's); tls_cert_file, "
           "tls_key_file: this client's certificate and key for mTLS; tls_server_name: the "
           "name the server's certificate carries when the target's host is not it. token, "
           "token_file (one of them): the bearer token a server with an access file admits, "
           "or a file whose first line it is. shared_namespace: act on the shared namespace "
           "instead of this client's tenant.")
      .def("batch_put", &PyStoreClient::BatchPut, py::arg("pages"),
           "pages: [(hash16, layer, PageLayout, bytes)] -> [already_present]")
      .def("put_pages", &PyStoreClient::PutPages, py::arg("keys"), py::arg("layout"),
           py::arg("pages"),
           "keys: [(hash16, layer)]; pages: C-contiguous buffers of layout.page_bytes each, "
           "or one buffer of len(keys) pages, read in place -> [already_present]")
      .def("get_pages", &PyStoreClient::GetPages, py::arg("keys"), py::arg("out"),
           "keys: [(hash16, layer)]; out: writable C-contiguous buffers, one per key, or one "
           "buffer of len(keys) equal pages -> "
           "[\"ok\" | \"not_found\" | \"lost\" | \"size_mismatch\"]; only ok pages are written")
      .def("batch_get", &PyStoreClient::BatchGet, py::arg("keys"),
           "keys: [(hash16, layer)] -> [(status, tier, bytes | None)]")
      .def("lookup", &PyStoreClient::Lookup, py::arg("chain"), py::arg("layer_begin") = 0,
           py::arg("layer_count") = 1, "-> (prefix_pages, tiers page-major)")
      .def("delete", &PyStoreClient::Delete, py::arg("keys"), py::arg("force") = false)
      .def("pin", &PyStoreClient::Pin, py::arg("keys"), py::arg("ttl_ms"),
           py::arg("pin_id") = py::bytes(),
           "keys: [(hash16, layer)]; pin_id: b\"\" creates a pin, else the 16-byte id of a "
           "pin to extend (and add keys to) -> the pin's id, 16 bytes")
      .def("unpin", &PyStoreClient::Unpin, py::arg("pin_id"),
           "pin_id: bytes from pin(). NOT_FOUND for an empty, unknown or expired id; "
           "INVALID_ARGUMENT for one that is not 16 bytes")
      .def("stats", &PyStoreClient::Stats);
}
