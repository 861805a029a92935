#include "placement/placement.h"

#include <algorithm>
#include <array>
#include <utility>

#include "xxhash.h"

namespace kvtier::placement {
namespace {

uint64_t MemberSeed(std::string_view id) { return XXH3_64bits(id.data(), id.size()); }

uint64_t Score(uint64_t seed, const Hash128& hash) {
  const std::array<uint8_t, Hash128::kBytes> bytes = hash.Canonical();
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
}

}  // namespace

uint64_t RendezvousScore(std::string_view id, const Hash128& hash) {
  return Score(MemberSeed(id), hash);
}

Placement::Placement(absl::Span<const v1::Member> members) {
  for (const v1::Member& member : members) {
    if (member.state() == v1::MEMBER_UP) {
      up_.push_back(Up{member, MemberSeed(member.id())});
    } else if (member.state() == v1::MEMBER_DRAINING || member.state() == v1::MEMBER_JOINING) {
      others_.push_back(member);
    }
  }
}

std::vector<size_t> Placement::Owners(const Hash128& hash, size_t count,
                                      std::string_view prefer_id) const {
  count = std::min(count, up_.size());
  std::vector<size_t> owners;
  if (count == 0) return owners;
  owners.reserve(count);
  if (!prefer_id.empty()) {
    for (size_t i = 0; i < up_.size(); ++i) {
      if (up_[i].member.id() == prefer_id) {
        owners.push_back(i);
        break;
      }
    }
  }
  // Few members: a partial selection over (score, index) pairs. Ties in
  // score (2^-64) break by id order, so every caller agrees.
  std::vector<std::pair<uint64_t, size_t>> scored;
  scored.reserve(up_.size());
  for (size_t i = 0; i < up_.size(); ++i) {
    if (!owners.empty() && owners.front() == i) continue;
    scored.emplace_back(Score(up_[i].seed, hash), i);
  }
  const size_t wanted = count - owners.size();
  std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(wanted),
                    scored.end(), [this](const auto& a, const auto& b) {
                      if (a.first != b.first) return a.first > b.first;
                      return up_[a.second].member.id() < up_[b.second].member.id();
                    });
  for (size_t i = 0; i < wanted; ++i) owners.push_back(scored[i].second);
  return owners;
}

}  // namespace kvtier::placement
