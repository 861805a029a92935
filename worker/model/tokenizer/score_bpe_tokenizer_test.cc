#include "worker/model/tokenizer/score_bpe_tokenizer.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::model {
namespace {

using ::testing::ElementsAre;

// ids:               0        1      2       3    4    5    6    7     8
//                    9      10     11      12        13
ScoreBpeTokenizer::Vocab TinyVocab(const std::string& space) {
  ScoreBpeTokenizer::Vocab v;
  v.pieces = {"<unk>", "<s>", "</s>", space, "a", "b", "c", "ab", "bc",
              "abc", space + "a", space + "ab", "<0xC3>", "<0xA9>", "<0x01>"};
  v.scores = {0, 0, 0, 0, 0, 0, 0, 3, 2, 5, 1, 0.5f, 0, 0, 0};
  return v;
}

TEST(ScoreBpeTest, MergesHighestScoreFirst) {
  auto t = ScoreBpeTokenizer::Create(TinyVocab(" "),
                                     ScoreBpeTokenizer::Convention::kLlama2c);
  ASSERT_TRUE(t.ok());
  // " abc": "ab" (3) beats " a" (1) and "bc" (2), then "abc" (5); " abc" is
  // not a token.
  EXPECT_THAT(*(*t)->Encode("abc", true), ElementsAre(1, 3, 9));
  // " a" (1) beats nothing else.
  EXPECT_THAT(*(*t)->Encode("a", false), ElementsAre(10));
  EXPECT_THAT(*(*t)->Encode("", true), ElementsAre(1));
  EXPECT_THAT(*(*t)->Encode("", false), ElementsAre());
}

TEST(ScoreBpeTest, ByteFallbackAndMissingBytes) {
  auto t = ScoreBpeTokenizer::Create(TinyVocab(" "),
                                     ScoreBpeTokenizer::Convention::kLlama2c);
  ASSERT_TRUE(t.ok());
  EXPECT_THAT(*(*t)->Encode("\xC3\xA9", false), ElementsAre(3, 12, 13));
  EXPECT_EQ((*t)->Encode("z", false).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ScoreBpeTest, DecodeRulesOfLlama2c) {
  auto t = ScoreBpeTokenizer::Create(TinyVocab(" "),
                                     ScoreBpeTokenizer::Convention::kLlama2c);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->Decode(1, 10), "a");   // leading space dropped after BOS
  EXPECT_EQ((*t)->Decode(4, 10), " a");
  // run.c's safe_printf skips lone bytes that are not printable or space,
  // UTF-8 pieces included.
  EXPECT_EQ((*t)->Decode(4, 12), "");
  EXPECT_EQ((*t)->Decode(4, 14), "");
  EXPECT_EQ((*t)->Decode(4, 99), "");
}

TEST(ScoreBpeTest, SentencePieceSpaces) {
  auto t = ScoreBpeTokenizer::Create(
      TinyVocab("\xE2\x96\x81"), ScoreBpeTokenizer::Convention::kSentencePiece);
  ASSERT_TRUE(t.ok());
  EXPECT_THAT(*(*t)->Encode("a abc", true), ElementsAre(1, 10, 3, 9));
  EXPECT_EQ((*t)->Decode(4, 10), " a");
  EXPECT_EQ((*t)->Decode(1, 10), "a");
  EXPECT_EQ((*t)->Decode(4, 14), "\x01");  // kept: no llama2.c filtering
}

TEST(ScoreBpeTest, CreateValidates) {
  ScoreBpeTokenizer::Vocab v = TinyVocab(" ");
  v.scores.pop_back();
  EXPECT_EQ(ScoreBpeTokenizer::Create(v, ScoreBpeTokenizer::Convention::kLlama2c)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  v = TinyVocab(" ");
  v.bos_id = 15;
  EXPECT_EQ(ScoreBpeTokenizer::Create(v, ScoreBpeTokenizer::Convention::kLlama2c)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // A NaN score never wins a merge and +inf always does: refused, naming
  // the piece; -inf (never merged into) is allowed.
  for (const float bad : {std::nanf(""), INFINITY}) {
    v = TinyVocab(" ");
    v.scores[2] = bad;
    const absl::Status s =
        ScoreBpeTokenizer::Create(v, ScoreBpeTokenizer::Convention::kLlama2c).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("BPE piece 2 has score"), absl::string_view::npos) << s;
  }
  v = TinyVocab(" ");
  v.scores[2] = -INFINITY;
  EXPECT_TRUE(ScoreBpeTokenizer::Create(v, ScoreBpeTokenizer::Convention::kLlama2c).ok());
}

TEST(ScoreBpeTest, Tok512RoundTrip) {
  auto t = ScoreBpeTokenizer::LoadLlama2c(
      std::string(KVTIER_STORIES260K_DIR) + "/tok512.bin", 512);
  ASSERT_TRUE(t.ok()) << t.status();
  const std::string text = "Once upon a time, Lily's cat ran to the park.\nThe end";
  absl::StatusOr<std::vector<int>> ids = (*t)->Encode(text, true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*ids)[0], 1);
  EXPECT_LT(ids->size(), text.size() / 2);  // merges happened
  std::string decoded;
  for (size_t i = 1; i < ids->size(); ++i) {
    decoded += (*t)->Decode((*ids)[i - 1], (*ids)[i]);
  }
  EXPECT_EQ(decoded, text);
  // A tokenizer file holds exactly the model's vocabulary.
  EXPECT_EQ(ScoreBpeTokenizer::LoadLlama2c(
                std::string(KVTIER_STORIES260K_DIR) + "/tok512.bin", 511)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::model
