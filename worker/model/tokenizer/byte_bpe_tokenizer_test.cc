#include "worker/model/tokenizer/byte_bpe_tokenizer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::model {
namespace {

using ::testing::ElementsAre;

// GPT-2's byte map sends ' ' to U+0120 and '\n' to U+010A.
constexpr char kSpace[] = "\xC4\xA0";
constexpr char kNewline[] = "\xC4\x8A";

ByteBpeTokenizer::Vocab TinyVocab() {
  ByteBpeTokenizer::Vocab v;
  // ids: 0 <|endoftext|>, 1 <|im_end|>, 2 h, 3 e, 4 l, 5 o, 6 Ġ, 7 Ċ, 8 he,
  //      9 ll, 10 hell, 11 hello, 12 Ġhello, 13 1, 14 !
  v.tokens = {"<|endoftext|>", "<|im_end|>", "h", "e", "l", "o", kSpace,
              kNewline, "he", "ll", "hell", "hello",
              std::string(kSpace) + "hello", "1", "!"};
  v.token_types = {3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  v.merges = {"h e", "l l", "he ll", "hell o", std::string(kSpace) + " hello"};
  v.pre = "smollm";
  v.bos_id = -1;
  v.eos_id = 1;
  return v;
}

TEST(ByteBpeTest, PreTokenizeSmolLM) {
  auto t = ByteBpeTokenizer::Create(TinyVocab());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT((*t)->PreTokenize("Hello world  123 it's\n\nok!!"),
              ElementsAre("Hello", " world", "  ", "1", "2", "3", " it", "'s",
                          "\n", "\n", "ok", "!!"));
  EXPECT_THAT((*t)->PreTokenize("x  y"), ElementsAre("x", " ", " y"));
  EXPECT_THAT((*t)->PreTokenize("h\xC3\xA9llo w\xC3\xB6rld \xE2\x80\x94 ok"),
              ElementsAre("h\xC3\xA9llo", " w\xC3\xB6rld", " \xE2\x80\x94",
                          " ok"));
}

TEST(ByteBpeTest, PreTokenizeGpt2KeepsDigitRuns) {
  ByteBpeTokenizer::Vocab v = TinyVocab();
  v.pre = "gpt2";
  auto t = ByteBpeTokenizer::Create(v);
  ASSERT_TRUE(t.ok());
  EXPECT_THAT((*t)->PreTokenize("ab 123 you'll"),
              ElementsAre("ab", " 123", " you", "'ll"));
}

TEST(ByteBpeTest, EncodesWithRankedMerges) {
  auto t = ByteBpeTokenizer::Create(TinyVocab());
  ASSERT_TRUE(t.ok());
  EXPECT_THAT(*(*t)->Encode("hello hello", true), ElementsAre(11, 12));
  EXPECT_THAT(*(*t)->Encode("hell\n", false), ElementsAre(10, 7));
  // Special tokens are matched literally; digits split.
  EXPECT_THAT(*(*t)->Encode("hello<|im_end|>11!", false),
              ElementsAre(11, 1, 13, 13, 14));
}

TEST(ByteBpeTest, BytesWithoutTokens) {
  auto strict = ByteBpeTokenizer::Create(TinyVocab());
  ASSERT_TRUE(strict.ok());
  EXPECT_EQ((*strict)->Encode("z", false).status().code(),
            absl::StatusCode::kInvalidArgument);
  ByteBpeTokenizer::Vocab v = TinyVocab();
  v.unk_id = 0;
  auto lenient = ByteBpeTokenizer::Create(v);
  ASSERT_TRUE(lenient.ok());
  EXPECT_THAT(*(*lenient)->Encode("hez", false), ElementsAre(8, 0));
}

TEST(ByteBpeTest, Decodes) {
  auto t = ByteBpeTokenizer::Create(TinyVocab());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->Decode(-1, 12), " hello");
  EXPECT_EQ((*t)->Decode(-1, 7), "\n");
  EXPECT_EQ((*t)->Decode(-1, 1), "");  // control token
  EXPECT_EQ((*t)->Decode(-1, 15), "");
}

TEST(ByteBpeTest, CreateValidates) {
  ByteBpeTokenizer::Vocab v = TinyVocab();
  v.merges.push_back("nospace");
  EXPECT_EQ(ByteBpeTokenizer::Create(v).status().code(),
            absl::StatusCode::kInvalidArgument);
  v = TinyVocab();
  v.token_types.pop_back();
  EXPECT_EQ(ByteBpeTokenizer::Create(v).status().code(),
            absl::StatusCode::kInvalidArgument);
  v = TinyVocab();
  v.eos_id = 15;
  EXPECT_EQ(ByteBpeTokenizer::Create(v).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::model
