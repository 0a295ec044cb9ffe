#include "tenancy/names.h"

#include <gtest/gtest.h>

namespace tenancy {
namespace {

TEST(NamesTest, ValidNames) {
  EXPECT_TRUE(IsValidName("acme"));
  EXPECT_TRUE(IsValidName("a"));
  EXPECT_TRUE(IsValidName("-x"));
  EXPECT_TRUE(IsValidName("_x.db"));
  EXPECT_TRUE(IsValidName(std::string(64, 'a')));
  EXPECT_FALSE(IsValidName(""));
  EXPECT_FALSE(IsValidName(".hidden"));
  EXPECT_FALSE(IsValidName("."));
  EXPECT_FALSE(IsValidName(".."));
  EXPECT_FALSE(IsValidName(std::string(65, 'a')));
  EXPECT_FALSE(IsValidName("has space"));
  EXPECT_FALSE(IsValidName("a/b"));
  EXPECT_FALSE(IsValidName("caf\xc3\xa9"));
}

TEST(NamesTest, ParseCompanions) {
  auto f = ParseFileName("app.db-wal");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->db, "app.db");
  EXPECT_EQ(f->kind, FileKind::kWal);
  EXPECT_EQ(ParseFileName("app.db-journal")->kind, FileKind::kJournal);
  EXPECT_EQ(ParseFileName("app.db-shm")->kind, FileKind::kShm);
  EXPECT_EQ(ParseFileName("app.db-pos")->kind, FileKind::kPos);
  EXPECT_EQ(ParseFileName("app.db")->kind, FileKind::kMain);
  EXPECT_EQ(ParseFileName("app.db")->db, "app.db");
  // A bare suffix is a database name, not a companion of "".
  EXPECT_EQ(ParseFileName("-wal")->kind, FileKind::kMain);
  EXPECT_FALSE(ParseFileName(".x-wal"));
  EXPECT_FALSE(ParseFileName("bad name"));
  EXPECT_EQ(MakeFileName("app.db", FileKind::kJournal), "app.db-journal");
}

}  // namespace
}  // namespace tenancy
