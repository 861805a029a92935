#include "worker/trace/trace.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/checksum.h"
#include "common/endian.h"
#include "common/status_macros.h"

namespace kvtier {
namespace {

constexpr uint64_t kChecksumBytes = 8;
constexpr uint64_t kHeaderChecksumOffset = 56;

absl::Status ErrnoStatus(const std::string& what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

void EncodeHeader(const TraceHeader& h, uint8_t* out) {
  std::memset(out, 0, kTraceHeaderBytes);
  std::memcpy(out, kTraceMagic, sizeof(kTraceMagic));
  StoreLe32(out + 8, kTraceVersion);
  StoreLe32(out + 12, kTraceHeaderBytes);
  StoreLe32(out + 16, h.n_layers);
  StoreLe32(out + 20, h.n_q_heads);
  StoreLe32(out + 24, h.n_kv_heads);
  StoreLe32(out + 28, h.head_dim);
  StoreLe32(out + 32, static_cast<uint32_t>(h.dtype));
  StoreLe32(out + 36, h.prompt_len);
  StoreLe32(out + 40, h.n_prompt_queries);
  StoreLe32(out + 44, h.decode_steps);
  StoreLe64(out + kHeaderChecksumOffset,
            PageChecksum(out, kHeaderChecksumOffset));
}

absl::StatusOr<TraceHeader> DecodeHeader(const uint8_t* in) {
  if (std::memcmp(in, kTraceMagic, sizeof(kTraceMagic)) != 0) {
    return absl::InvalidArgumentError("not a kvtier trace: bad magic");
  }
  const uint32_t version = LoadLe32(in + 8);
  if (version != kTraceVersion) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported trace version ",
                                                   version, " (expected ",
                                                   kTraceVersion, ")"));
  }
  if (LoadLe64(in + kHeaderChecksumOffset) !=
      PageChecksum(in, kHeaderChecksumOffset)) {
    return absl::DataLossError("trace header checksum mismatch");
  }
  if (LoadLe32(in + 12) != kTraceHeaderBytes) {
    return absl::InvalidArgumentError("trace header_bytes is not 64");
  }
  TraceHeader h;
  h.n_layers = LoadLe32(in + 16);
  h.n_q_heads = LoadLe32(in + 20);
  h.n_kv_heads = LoadLe32(in + 24);
  h.head_dim = LoadLe32(in + 28);
  h.dtype = static_cast<TraceDtype>(LoadLe32(in + 32));
  h.prompt_len = LoadLe32(in + 36);
  h.n_prompt_queries = LoadLe32(in + 40);
  h.decode_steps = LoadLe32(in + 44);
  if (LoadLe64(in + 48) != 0) {
    return absl::InvalidArgumentError("trace reserved header field is not 0");
  }
  RETURN_IF_ERROR(ValidateTraceHeader(h));
  return h;
}

void EncodeElements(const std::vector<float>& values, TraceDtype dtype,
                    uint8_t* out) {
  if (dtype == TraceDtype::kF32) {
    for (size_t i = 0; i < values.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &values[i], 4);
      StoreLe32(out + 4 * i, bits);
    }
    return;
  }
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t bits = FloatToHalf(values[i]);
    out[2 * i] = static_cast<uint8_t>(bits);
    out[2 * i + 1] = static_cast<uint8_t>(bits >> 8);
  }
}

void DecodeElements(const uint8_t* in, TraceDtype dtype,
                    std::vector<float>* values) {
  if (dtype == TraceDtype::kF32) {
    for (size_t i = 0; i < values->size(); ++i) {
      const uint32_t bits = LoadLe32(in + 4 * i);
      std::memcpy(&(*values)[i], &bits, 4);
    }
    return;
  }
  for (size_t i = 0; i < values->size(); ++i) {
    (*values)[i] = HalfToFloat(static_cast<uint16_t>(
        in[2 * i] | (static_cast<uint16_t>(in[2 * i + 1]) << 8)));
  }
}

absl::Status CheckValues(const std::vector<float>& values, uint64_t expected,
                         TraceDtype dtype, const char* name) {
  if (values.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("trace record field ", name, " has ", values.size(),
                     " elements, expected ", expected));
  }
  for (float v : values) {
    const bool fits =
        dtype == TraceDtype::kF32
            ? std::isfinite(v)
            : std::isfinite(v) && (FloatToHalf(v) & 0x7c00) != 0x7c00;
    if (!fits) {
      return absl::InvalidArgumentError(
          absl::StrCat("trace record field ", name, " holds ", v,
                       ", not a finite value of the trace dtype"));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, const uint8_t* data, uint64_t bytes,
                      const std::string& path) {
  while (bytes > 0) {
    const ssize_t n = ::write(fd, data, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", path);
    }
    data += n;
    bytes -= static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t TraceHeader::PromptRecordElements() const {
  return (uint64_t{n_prompt_queries} * n_q_heads +
          2 * uint64_t{prompt_len} * n_kv_heads) *
         head_dim;
}

uint64_t TraceHeader::StepRecordElements() const {
  return (uint64_t{n_q_heads} + 2 * uint64_t{n_kv_heads}) * head_dim;
}

uint64_t TraceHeader::PromptRecordBytes() const {
  return PromptRecordElements() * ElementBytes() + kChecksumBytes;
}

uint64_t TraceHeader::StepRecordBytes() const {
  return StepRecordElements() * ElementBytes() + kChecksumBytes;
}

uint64_t TraceHeader::PromptRecordOffset(uint32_t layer) const {
  return kTraceHeaderBytes + uint64_t{layer} * PromptRecordBytes();
}

uint64_t TraceHeader::StepRecordOffset(uint32_t step, uint32_t layer) const {
  return PromptRecordOffset(n_layers) +
         (uint64_t{step} * n_layers + layer) * StepRecordBytes();
}

uint64_t TraceHeader::FileBytes() const {
  return StepRecordOffset(decode_steps, 0);
}

absl::Status ValidateTraceHeader(const TraceHeader& h) {
  const std::pair<const char*, uint32_t> dims[] = {
      {"n_layers", h.n_layers},
      {"n_q_heads", h.n_q_heads},
      {"n_kv_heads", h.n_kv_heads},
      {"head_dim", h.head_dim},
      {"prompt_len", h.prompt_len}};
  for (const auto& [name, value] : dims) {
    if (value == 0 || value > kTraceMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "trace ", name, " = ", value, " outside [1, ", kTraceMaxDim, "]"));
    }
  }
  if (h.decode_steps > kTraceMaxDim) {
    return absl::InvalidArgumentError("trace decode_steps too large");
  }
  if (h.n_q_heads % h.n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("trace n_kv_heads ", h.n_kv_heads,
                     " does not divide n_q_heads ", h.n_q_heads));
  }
  if (h.n_prompt_queries > h.prompt_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("trace n_prompt_queries ", h.n_prompt_queries,
                     " exceeds prompt_len ", h.prompt_len));
  }
  if (h.dtype != TraceDtype::kF32 && h.dtype != TraceDtype::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown trace dtype ", static_cast<uint32_t>(h.dtype)));
  }
  // With every dimension <= 2^20 a record is < 2^62 bytes, but a whole file
  // could still overflow; 2^50 bytes is far beyond any real trace.
  const long double bytes =
      static_cast<long double>(h.PromptRecordBytes()) * h.n_layers +
      static_cast<long double>(h.StepRecordBytes()) * h.n_layers *
          h.decode_steps;
  if (bytes > static_cast<long double>(uint64_t{1} << 50)) {
    return absl::InvalidArgumentError("trace shape implies a file > 1 PiB");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- writer

absl::StatusOr<TraceWriter> TraceWriter::Create(const std::string& path,
                                                const TraceHeader& header) {
  RETURN_IF_ERROR(ValidateTraceHeader(header));
  const std::string tmp = path + ".tmp";
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("open", tmp);
  TraceWriter writer(path, header, fd);
  uint8_t bytes[kTraceHeaderBytes];
  EncodeHeader(header, bytes);
  RETURN_IF_ERROR(WriteAll(fd, bytes, kTraceHeaderBytes, tmp));
  return writer;
}

TraceWriter::TraceWriter(TraceWriter&& other) noexcept
    : path_(std::move(other.path_)),
      header_(other.header_),
      fd_(std::exchange(other.fd_, -1)),
      prompt_layers_written_(other.prompt_layers_written_),
      steps_records_written_(other.steps_records_written_),
      finished_(other.finished_) {}

TraceWriter::~TraceWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    if (!finished_) ::unlink((path_ + ".tmp").c_str());
  }
}

absl::Status TraceWriter::AppendRecord(
    const std::vector<const std::vector<float>*>& parts) {
  uint64_t elements = 0;
  for (const auto* p : parts) elements += p->size();
  std::vector<uint8_t> bytes(elements * header_.ElementBytes() +
                             kChecksumBytes);
  uint64_t at = 0;
  for (const auto* p : parts) {
    EncodeElements(*p, header_.dtype, bytes.data() + at);
    at += p->size() * header_.ElementBytes();
  }
  StoreLe64(bytes.data() + at, PageChecksum(bytes.data(), at));
  return WriteAll(fd_, bytes.data(), bytes.size(), path_ + ".tmp");
}

absl::Status TraceWriter::WritePromptLayer(uint32_t layer,
                                           const TracePromptLayer& rec) {
  if (fd_ < 0 || finished_) {
    return absl::FailedPreconditionError("trace writer is closed");
  }
  if (layer != prompt_layers_written_ || layer >= header_.n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt layer ", layer, " written out of order (next is ",
                     prompt_layers_written_, ")"));
  }
  const uint64_t d = header_.head_dim;
  RETURN_IF_ERROR(CheckValues(
      rec.queries, uint64_t{header_.n_prompt_queries} * header_.n_q_heads * d,
      header_.dtype, "queries"));
  const uint64_t kv = uint64_t{header_.prompt_len} * header_.n_kv_heads * d;
  RETURN_IF_ERROR(CheckValues(rec.keys, kv, header_.dtype, "keys"));
  RETURN_IF_ERROR(CheckValues(rec.values, kv, header_.dtype, "values"));
  RETURN_IF_ERROR(AppendRecord({&rec.queries, &rec.keys, &rec.values}));
  ++prompt_layers_written_;
  return absl::OkStatus();
}

absl::Status TraceWriter::WriteStep(uint32_t step, uint32_t layer,
                                    const TraceStep& rec) {
  if (fd_ < 0 || finished_) {
    return absl::FailedPreconditionError("trace writer is closed");
  }
  const uint64_t index = uint64_t{step} * header_.n_layers + layer;
  if (prompt_layers_written_ != header_.n_layers ||
      step >= header_.decode_steps || layer >= header_.n_layers ||
      index != steps_records_written_) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode record (step ", step, ", layer ", layer,
                     ") written out of order or out of range"));
  }
  const uint64_t d = header_.head_dim;
  RETURN_IF_ERROR(CheckValues(rec.query, uint64_t{header_.n_q_heads} * d,
                              header_.dtype, "query"));
  RETURN_IF_ERROR(CheckValues(rec.key, uint64_t{header_.n_kv_heads} * d,
                              header_.dtype, "key"));
  RETURN_IF_ERROR(CheckValues(rec.value, uint64_t{header_.n_kv_heads} * d,
                              header_.dtype, "value"));
  RETURN_IF_ERROR(AppendRecord({&rec.query, &rec.key, &rec.value}));
  ++steps_records_written_;
  return absl::OkStatus();
}

absl::Status TraceWriter::Finish() {
  if (fd_ < 0 || finished_) {
    return absl::FailedPreconditionError("trace writer is closed");
  }
  if (prompt_layers_written_ != header_.n_layers ||
      steps_records_written_ !=
          uint64_t{header_.decode_steps} * header_.n_layers) {
    return absl::FailedPreconditionError(absl::StrCat(
        "trace incomplete: ", prompt_layers_written_, "/", header_.n_layers,
        " prompt layers, ", steps_records_written_, "/",
        uint64_t{header_.decode_steps} * header_.n_layers, " decode records"));
  }
  const std::string tmp = path_ + ".tmp";
  if (::fsync(fd_) != 0) return ErrnoStatus("fsync", tmp);
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return ErrnoStatus("close", tmp);
  }
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    const absl::Status status = ErrnoStatus("rename", tmp);
    ::unlink(tmp.c_str());
    return status;
  }
  finished_ = true;
  return absl::OkStatus();
}

// ---------------------------------------------------------------- reader

absl::StatusOr<TraceReader> TraceReader::Open(const std::string& path) {
  // O_NONBLOCK: a FIFO is refused below instead of waited on.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError("no trace at " + path);
    return ErrnoStatus("open", path);
  }
  TraceReader reader(TraceHeader{}, fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("fstat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(path + " is not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kTraceHeaderBytes) {
    if (size >= sizeof(kTraceMagic)) {
      uint8_t magic[sizeof(kTraceMagic)];
      if (::pread(fd, magic, sizeof(magic), 0) == sizeof(magic) &&
          std::memcmp(magic, kTraceMagic, sizeof(magic)) != 0) {
        return absl::InvalidArgumentError("not a kvtier trace: bad magic");
      }
    }
    return absl::DataLossError(absl::StrCat(
        "trace ", path, " truncated: ", size, " bytes, header needs 64"));
  }
  uint8_t bytes[kTraceHeaderBytes];
  if (::pread(fd, bytes, kTraceHeaderBytes, 0) !=
      static_cast<ssize_t>(kTraceHeaderBytes)) {
    return absl::DataLossError("short read of trace header " + path);
  }
  ASSIGN_OR_RETURN(reader.header_, DecodeHeader(bytes));
  const uint64_t expected = reader.header_.FileBytes();
  if (size != expected) {
    return absl::DataLossError(absl::StrCat(
        "trace ", path, size < expected ? " truncated" : " has trailing bytes",
        ": ", size, " bytes, header implies ", expected));
  }
  return reader;
}

TraceReader::TraceReader(TraceReader&& other) noexcept
    : header_(other.header_), fd_(std::exchange(other.fd_, -1)) {}

TraceReader::~TraceReader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status TraceReader::ReadRecord(
    uint64_t offset, const std::vector<std::vector<float>*>& parts,
    const std::vector<uint64_t>& sizes) const {
  uint64_t elements = 0;
  for (uint64_t s : sizes) elements += s;
  const uint64_t payload = elements * header_.ElementBytes();
  std::vector<uint8_t> bytes(payload + kChecksumBytes);
  uint64_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pread(fd_, bytes.data() + done, bytes.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::DataLossError(
          absl::StrCat("short read of trace record at offset ", offset));
    }
    done += static_cast<uint64_t>(n);
  }
  if (LoadLe64(bytes.data() + payload) != PageChecksum(bytes.data(), payload)) {
    return absl::DataLossError(
        absl::StrCat("trace record checksum mismatch at offset ", offset));
  }
  uint64_t at = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    std::vector<float> decoded(sizes[i]);
    DecodeElements(bytes.data() + at, header_.dtype, &decoded);
    at += sizes[i] * header_.ElementBytes();
    // As the writer checks (CheckValues): a record with a valid checksum
    // may still come from a writer that did not.
    for (size_t e = 0; e < decoded.size(); ++e) {
      if (!std::isfinite(decoded[e])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "trace record at offset ", offset, " holds ", decoded[e], " (field ", i,
            ", element ", e, "); a trace holds finite values only"));
      }
    }
    *parts[i] = std::move(decoded);
  }
  return absl::OkStatus();
}

absl::Status TraceReader::ReadPromptLayer(uint32_t layer,
                                          TracePromptLayer* out) const {
  if (layer >= header_.n_layers) {
    return absl::OutOfRangeError(
        absl::StrCat("trace layer ", layer, " >= n_layers ", header_.n_layers));
  }
  const uint64_t d = header_.head_dim;
  const uint64_t kv = uint64_t{header_.prompt_len} * header_.n_kv_heads * d;
  TracePromptLayer rec;
  RETURN_IF_ERROR(ReadRecord(
      header_.PromptRecordOffset(layer), {&rec.queries, &rec.keys, &rec.values},
      {uint64_t{header_.n_prompt_queries} * header_.n_q_heads * d, kv, kv}));
  *out = std::move(rec);
  return absl::OkStatus();
}

absl::Status TraceReader::ReadStep(uint32_t step, uint32_t layer,
                                   TraceStep* out) const {
  if (step >= header_.decode_steps || layer >= header_.n_layers) {
    return absl::OutOfRangeError(absl::StrCat(
        "trace record (step ", step, ", layer ", layer, ") out of range"));
  }
  const uint64_t d = header_.head_dim;
  TraceStep rec;
  RETURN_IF_ERROR(ReadRecord(
      header_.StepRecordOffset(step, layer), {&rec.query, &rec.key, &rec.value},
      {uint64_t{header_.n_q_heads} * d, uint64_t{header_.n_kv_heads} * d,
       uint64_t{header_.n_kv_heads} * d}));
  *out = std::move(rec);
  return absl::OkStatus();
}

// ---------------------------------------------------------------- f16

uint16_t FloatToHalf(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t exp = (x >> 23) & 0xff;
  uint32_t mant = x & 0x7fffff;
  if (exp == 0xff) return sign | 0x7c00 | (mant != 0 ? 0x200 : 0);
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const int shift = 14 - e;
    uint32_t half_mant = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_mant & 1))) ++half_mant;
    return static_cast<uint16_t>(sign | half_mant);
  }
  uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to inf).
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exp = (bits >> 10) & 0x1f;
  const uint32_t mant = bits & 0x3ff;
  uint32_t x;
  if (exp == 0) {
    const float magnitude = std::ldexp(static_cast<float>(mant), -24);
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exp == 0x1f) {
    x = sign | 0x7f800000 | (mant << 13);
  } else {
    x = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &x, 4);
  return out;
}

}  // namespace kvtier
