package probe

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver "mysql" for the tools
	"github.com/golang-migrate/migrate/v4"
	migratemysql "github.com/golang-migrate/migrate/v4/database/mysql"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/google/go-cmp/cmp"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the tools
	"github.com/pressly/goose/v3"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
)

// The schema tests run against the machine's PostgreSQL (127.0.0.1:5432,
// trust) and MariaDB (127.0.0.1:3306, root): each test creates a database of
// its own with a unique name and drops it at cleanup.

// schemaDB is a throwaway database: dsn for the prober, db for the tools.
type schemaDB struct {
	kind string // "postgres" or "mysql"
	name string
	dsn  string
	db   *sql.DB
}

var schemaKinds = []string{"postgres", "mysql"}

func newSchemaDB(t *testing.T, kind string) *schemaDB {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "cg_schema_" + hex.EncodeToString(b[:])
	var admin *sql.DB
	var err error
	s := &schemaDB{kind: kind, name: name}
	switch kind {
	case "postgres":
		admin, err = sql.Open("pgx", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
		s.dsn = "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
	case "mysql":
		admin, err = sql.Open("mysql", "root@tcp(127.0.0.1:3306)/")
		s.dsn = "mysql://root@127.0.0.1:3306/" + name + "?ssl-mode=DISABLED"
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ExecContext(t.Context(), "CREATE DATABASE "+name); err != nil {
		_ = admin.Close()
		t.Skipf("no %s server to create a database on: %v", kind, err)
	}
	switch kind {
	case "postgres":
		s.db, err = sql.Open("pgx", s.dsn)
	case "mysql":
		s.db, err = sql.Open("mysql", "root@tcp(127.0.0.1:3306)/"+name+"?multiStatements=true&parseTime=true")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		drop := "DROP DATABASE " + name
		if kind == "postgres" {
			drop += " WITH (FORCE)"
		}
		if _, err := admin.ExecContext(ctx, drop); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		_ = admin.Close()
	})
	return s
}

// exec runs statements (one per call for PostgreSQL's sake).
func (s *schemaDB) exec(t *testing.T, stmts ...string) {
	t.Helper()
	for _, st := range stmts {
		if _, err := s.db.ExecContext(t.Context(), st); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
	}
}

// pick returns the statement for the server kind.
func (s *schemaDB) pick(postgres, mysql string) string {
	if s.kind == "postgres" {
		return postgres
	}
	return mysql
}

func schemaProber() *Prober {
	return NewProber(ProberOptions{PrivateCIDRs: loopback, Timeout: 5 * time.Second, Ports: []uint16{5432, 3306}, PassTTL: -1})
}

// state reads the schema of s with q; the probe must pass.
func (s *schemaDB) state(t *testing.T, p *Prober, q SchemaQuery) SchemaState {
	t.Helper()
	res, err := p.ProbeSchema(t.Context(), s.dsn, q)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed() || res.Schema == nil {
		t.Fatalf("schema probe did not pass: %s", rendered(res))
	}
	return *res.Schema
}

func checkState(t *testing.T, got SchemaState, want SchemaState) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("schema state (-want +got):\n%s", diff)
	}
}

// TestSchemaGolangMigrate reads the table golang-migrate itself writes:
// the version after each step, and the dirty flag a failed migration
// leaves.
func TestSchemaGolangMigrate(t *testing.T) {
	for _, kind := range schemaKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSchemaDB(t, kind)
			fsys := fstest.MapFS{
				"1_users.up.sql":     {Data: []byte("CREATE TABLE users (id INT PRIMARY KEY)")},
				"1_users.down.sql":   {Data: []byte("DROP TABLE users")},
				"2_email.up.sql":     {Data: []byte("ALTER TABLE users ADD COLUMN email VARCHAR(100)")},
				"2_email.down.sql":   {Data: []byte("ALTER TABLE users DROP COLUMN email")},
				"3_broken.up.sql":    {Data: []byte("ALTER TABLE no_such_table ADD COLUMN x INT")},
				"3_broken.down.sql":  {Data: []byte("SELECT 1")},
				"20_later.up.sql":    {Data: []byte("SELECT 1")},
				"20_later.down.sql":  {Data: []byte("SELECT 1")},
				"100_ahead.up.sql":   {Data: []byte("SELECT 1")},
				"100_ahead.down.sql": {Data: []byte("SELECT 1")},
			}
			src, err := iofs.New(fsys, ".")
			if err != nil {
				t.Fatal(err)
			}
			var m *migrate.Migrate
			if kind == "postgres" {
				drv, err := migratepgx.WithInstance(s.db, &migratepgx.Config{})
				if err != nil {
					t.Fatal(err)
				}
				m, err = migrate.NewWithInstance("iofs", src, "pgx", drv)
				if err != nil {
					t.Fatal(err)
				}
			} else {
				drv, err := migratemysql.WithInstance(s.db, &migratemysql.Config{})
				if err != nil {
					t.Fatal(err)
				}
				m, err = migrate.NewWithInstance("iofs", src, "mysql", drv)
				if err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() { _, _ = m.Close() })
			p := schemaProber()
			q := SchemaQuery{Tool: ToolGolangMigrate}

			// golang-migrate creates its table on first use.
			if _, _, err := m.Version(); err != migrate.ErrNilVersion {
				t.Fatalf("version before any migration: %v", err)
			}
			checkState(t, s.state(t, p, q), SchemaState{Tool: ToolGolangMigrate})
			if err := m.Steps(2); err != nil {
				t.Fatal(err)
			}
			checkState(t, s.state(t, p, q), SchemaState{Tool: ToolGolangMigrate, Version: "2"})
			if err := m.Steps(1); err == nil {
				t.Fatal("migration 3 applied; want it to fail")
			}
			checkState(t, s.state(t, p, q), SchemaState{Tool: ToolGolangMigrate, Version: "3", Dirty: 1})
			// Forced past the failure, then up: 100 is the latest.
			if err := m.Force(3); err != nil {
				t.Fatal(err)
			}
			if err := m.Up(); err != nil {
				t.Fatal(err)
			}
			checkState(t, s.state(t, p, q), SchemaState{Tool: ToolGolangMigrate, Version: "100"})
		})
	}
}

// TestSchemaGoose reads the table goose itself writes, up and down.
func TestSchemaGoose(t *testing.T) {
	for _, kind := range schemaKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSchemaDB(t, kind)
			fsys := fstest.MapFS{
				"00001_users.sql":  {Data: []byte("-- +goose Up\nCREATE TABLE users (id INT PRIMARY KEY);\n-- +goose Down\nDROP TABLE users;\n")},
				"00002_email.sql":  {Data: []byte("-- +goose Up\nALTER TABLE users ADD COLUMN email VARCHAR(100);\n-- +goose Down\nALTER TABLE users DROP COLUMN email;\n")},
				"00010_later.sql":  {Data: []byte("-- +goose Up\nSELECT 1;\n-- +goose Down\nSELECT 1;\n")},
				"00011_latest.sql": {Data: []byte("-- +goose Up\nSELECT 1;\n-- +goose Down\nSELECT 1;\n")},
			}
			dialect := goose.DialectPostgres
			if kind == "mysql" {
				dialect = goose.DialectMySQL
			}
			prov, err := goose.NewProvider(dialect, s.db, fsys)
			if err != nil {
				t.Fatal(err)
			}
			p := schemaProber()
			q := SchemaQuery{Tool: ToolGoose}
			if _, err := s.db.ExecContext(t.Context(), "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			missing := s.state(t, p, q)
			checkState(t, missing, SchemaState{Tool: ToolGoose, Missing: true})

			if _, err := prov.UpTo(t.Context(), 2); err != nil {
				t.Fatal(err)
			}
			checkState(t, s.state(t, p, q), SchemaState{Tool: ToolGoose, Version: "2"})
			if _, err := prov.Up(t.Context()); err != nil {
				t.Fatal(err)
			}
			checkState(t, s.state(t, p, q), SchemaState{Tool: ToolGoose, Version: "11"})
			if _, err := prov.Down(t.Context()); err != nil {
				t.Fatal(err)
			}
			checkState(t, s.state(t, p, q), SchemaState{Tool: ToolGoose, Version: "10"})
			// Older goose versions marked a rollback with a row of
			// is_applied false instead of deleting: the version is not
			// current either way.
			s.exec(t, s.pick("INSERT INTO goose_db_version (version_id, is_applied) VALUES (10, false)",
				"INSERT INTO goose_db_version (version_id, is_applied) VALUES (10, 0)"))
			checkState(t, s.state(t, p, q), SchemaState{Tool: ToolGoose, Version: "2"})
		})
	}
}

// TestSchemaDocumentedTables reads each other tool's table, created with
// the DDL the tool itself uses on that server.
func TestSchemaDocumentedTables(t *testing.T) {
	for _, kind := range schemaKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSchemaDB(t, kind)
			p := schemaProber()

			// Every tool's table is missing in an empty database.
			for _, tool := range SchemaTools() {
				checkState(t, s.state(t, p, SchemaQuery{Tool: tool, Min: "a.b", Max: "a.c"}), SchemaState{Tool: tool, Missing: true})
			}

			t.Run("flyway", func(t *testing.T) {
				s.exec(t, s.pick(`CREATE TABLE flyway_schema_history (installed_rank INT NOT NULL PRIMARY KEY, version VARCHAR(50), description VARCHAR(200) NOT NULL,
					type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL, checksum INT, installed_by VARCHAR(100) NOT NULL,
					installed_on TIMESTAMP NOT NULL DEFAULT now(), execution_time INT NOT NULL, success BOOLEAN NOT NULL)`,
					`CREATE TABLE flyway_schema_history (installed_rank INT NOT NULL PRIMARY KEY, version VARCHAR(50), description VARCHAR(200) NOT NULL,
					type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL, checksum INT, installed_by VARCHAR(100) NOT NULL,
					installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, execution_time INT NOT NULL, success BOOL NOT NULL)`))
				q := SchemaQuery{Tool: ToolFlyway}
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolFlyway})
				s.exec(t,
					"INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, installed_by, execution_time, success) VALUES (1, '1', 'init', 'SQL', 'V1__init.sql', 'app', 5, true)",
					"INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, installed_by, execution_time, success) VALUES (2, '1.1', 'email', 'SQL', 'V1_1__email.sql', 'app', 5, true)",
					"INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, installed_by, execution_time, success) VALUES (3, NULL, 'views', 'SQL', 'R__views.sql', 'app', 5, true)")
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolFlyway, Version: "1.1"})
				s.exec(t, "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, installed_by, execution_time, success) VALUES (4, '1.2', 'broken', 'SQL', 'V1_2__broken.sql', 'app', 5, false)")
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolFlyway, Version: "1.1", Dirty: 1})
			})

			t.Run("liquibase", func(t *testing.T) {
				lockType := s.pick("BOOLEAN", "BIT(1)")
				s.exec(t, `CREATE TABLE DATABASECHANGELOG (ID VARCHAR(255) NOT NULL, AUTHOR VARCHAR(255) NOT NULL, FILENAME VARCHAR(255) NOT NULL,
					DATEEXECUTED TIMESTAMP NOT NULL, ORDEREXECUTED INT NOT NULL, EXECTYPE VARCHAR(10) NOT NULL, MD5SUM VARCHAR(35),
					DESCRIPTION VARCHAR(255), COMMENTS VARCHAR(255), TAG VARCHAR(255), LIQUIBASE VARCHAR(20), CONTEXTS VARCHAR(255),
					LABELS VARCHAR(255), DEPLOYMENT_ID VARCHAR(10))`,
					"CREATE TABLE DATABASECHANGELOGLOCK (ID INT NOT NULL PRIMARY KEY, LOCKED "+lockType+" NOT NULL, LOCKGRANTED TIMESTAMP NULL, LOCKEDBY VARCHAR(255))",
					"INSERT INTO DATABASECHANGELOGLOCK (ID, LOCKED) VALUES (1, "+s.pick("false", "b'0'")+")")
				q := SchemaQuery{Tool: ToolLiquibase, Min: "add-email", Max: "add-email"}
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolLiquibase})
				for i, id := range []string{"create-users", "add-email"} {
					s.exec(t, "INSERT INTO DATABASECHANGELOG (ID, AUTHOR, FILENAME, DATEEXECUTED, ORDEREXECUTED, EXECTYPE) VALUES ('"+id+"', 'app', 'changelog.xml', CURRENT_TIMESTAMP, "+string(rune('1'+i))+", 'EXECUTED')")
				}
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolLiquibase, Version: "add-email", MinApplied: true, MaxApplied: true})
				s.exec(t, "INSERT INTO DATABASECHANGELOG (ID, AUTHOR, FILENAME, DATEEXECUTED, ORDEREXECUTED, EXECTYPE) VALUES ('drop-name', 'app', 'changelog.xml', CURRENT_TIMESTAMP, 3, 'EXECUTED')",
					"UPDATE DATABASECHANGELOGLOCK SET LOCKED = "+s.pick("true", "b'1'")+", LOCKEDBY = 'migrator'")
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolLiquibase, Version: "drop-name", Locked: true, MinApplied: true, MaxApplied: true, AfterMax: 1})
			})

			t.Run("alembic", func(t *testing.T) {
				s.exec(t, "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")
				q := SchemaQuery{Tool: ToolAlembic}
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolAlembic})
				s.exec(t, "INSERT INTO alembic_version (version_num) VALUES ('ae1027a6acf')")
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolAlembic, Version: "ae1027a6acf", Heads: []string{"ae1027a6acf"}, HeadCount: 1})
				s.exec(t, "INSERT INTO alembic_version (version_num) VALUES ('1975ea83b712')", "INSERT INTO alembic_version (version_num) VALUES ('27c6a30d7c24')")
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolAlembic, Version: "1975ea83b712", Heads: []string{"1975ea83b712", "ae1027a6acf"}, HeadCount: 3})
			})

			t.Run("django", func(t *testing.T) {
				s.exec(t, s.pick(`CREATE TABLE django_migrations (id bigserial PRIMARY KEY, app varchar(255) NOT NULL, name varchar(255) NOT NULL, applied timestamptz NOT NULL)`,
					`CREATE TABLE django_migrations (id bigint AUTO_INCREMENT PRIMARY KEY, app varchar(255) NOT NULL, name varchar(255) NOT NULL, applied datetime(6) NOT NULL)`))
				for _, m := range [][2]string{{"contenttypes", "0001_initial"}, {"shop", "0001_initial"}, {"shop", "0002_order_email"}, {"auth", "0001_initial"}} {
					s.exec(t, "INSERT INTO django_migrations (app, name, applied) VALUES ('"+m[0]+"', '"+m[1]+"', CURRENT_TIMESTAMP)")
				}
				q := SchemaQuery{Tool: ToolDjango, Min: "shop.0002_order_email", Max: "shop.0002_order_email"}
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolDjango, Version: "auth.0001_initial", MinApplied: true, MaxApplied: true})
				s.exec(t, "INSERT INTO django_migrations (app, name, applied) VALUES ('shop', '0003_remove_order_name', CURRENT_TIMESTAMP)")
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolDjango, Version: "shop.0003_remove_order_name", MinApplied: true, MaxApplied: true, AfterMax: 1})
				checkState(t, s.state(t, p, SchemaQuery{Tool: ToolDjango, Min: "shop.0004_x", Max: "other.0001_initial"}),
					SchemaState{Tool: ToolDjango, Version: "shop.0003_remove_order_name"})
			})

			t.Run("rails", func(t *testing.T) {
				// golang-migrate's table has the same name: rails gets
				// its own database here.
				r := newSchemaDB(t, kind)
				r.exec(t, "CREATE TABLE schema_migrations (version varchar(255) NOT NULL PRIMARY KEY)")
				for _, v := range []string{"20240101000000", "20240301120000", "9"} {
					r.exec(t, "INSERT INTO schema_migrations (version) VALUES ('"+v+"')")
				}
				checkState(t, r.state(t, p, SchemaQuery{Tool: ToolRails}), SchemaState{Tool: ToolRails, Version: "20240301120000"})
			})

			t.Run("prisma", func(t *testing.T) {
				s.exec(t, s.pick(`CREATE TABLE _prisma_migrations (id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,
					migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ, started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
					applied_steps_count INTEGER NOT NULL DEFAULT 0)`,
					`CREATE TABLE _prisma_migrations (id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL, finished_at DATETIME(3),
					migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at DATETIME(3), started_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
					applied_steps_count INTEGER UNSIGNED NOT NULL DEFAULT 0)`))
				ins := "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, rolled_back_at, applied_steps_count) VALUES "
				s.exec(t, ins+"('1', 'c', '2024-01-01 00:00:01', '20240101000000_init', NULL, 1)",
					ins+"('2', 'c', '2024-02-01 00:00:01', '20240201000000_add_email', NULL, 1)",
					ins+"('3', 'c', NULL, '20240215000000_oops', '2024-02-15 00:00:01', 0)")
				q := SchemaQuery{Tool: ToolPrisma, Min: "20240201000000_add_email", Max: "20240201000000_add_email"}
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolPrisma, Version: "20240201000000_add_email", MinApplied: true, MaxApplied: true})
				s.exec(t, ins+"('4', 'c', NULL, '20240301000000_drop_name', NULL, 0)")
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolPrisma, Version: "20240201000000_add_email", Dirty: 1, MinApplied: true, MaxApplied: true})
				s.exec(t, "UPDATE _prisma_migrations SET finished_at = '2024-03-01 00:00:01', applied_steps_count = 1 WHERE id = '4'")
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolPrisma, Version: "20240301000000_drop_name", MinApplied: true, MaxApplied: true, AfterMax: 1})
			})

			t.Run("atlas", func(t *testing.T) {
				table := "atlas_schema_revisions"
				if kind == "postgres" {
					s.exec(t, "CREATE SCHEMA atlas_schema_revisions")
					table = "atlas_schema_revisions.atlas_schema_revisions"
				}
				s.exec(t, s.pick(`CREATE TABLE `+table+` ("version" character varying NOT NULL, "description" character varying NOT NULL, "type" bigint NOT NULL DEFAULT 2,
					"applied" bigint NOT NULL DEFAULT 0, "total" bigint NOT NULL DEFAULT 0, "executed_at" timestamptz NOT NULL, "execution_time" bigint NOT NULL,
					"error" text NULL, "error_stmt" text NULL, "hash" character varying NOT NULL, "partial_hashes" jsonb NULL, "operator_version" character varying NOT NULL,
					PRIMARY KEY ("version"))`,
					"CREATE TABLE "+table+" (`version` varchar(255) NOT NULL, `description` varchar(255) NOT NULL, `type` bigint unsigned NOT NULL DEFAULT 2,"+
						" `applied` bigint NOT NULL DEFAULT 0, `total` bigint NOT NULL DEFAULT 0, `executed_at` timestamp NOT NULL, `execution_time` bigint NOT NULL,"+
						" `error` longtext NULL, `error_stmt` longtext NULL, `hash` varchar(255) NOT NULL, `partial_hashes` json NULL, `operator_version` varchar(255) NOT NULL,"+
						" PRIMARY KEY (`version`))"))
				ins := "INSERT INTO " + table + " (version, description, applied, total, executed_at, execution_time, error, hash, operator_version) VALUES "
				s.exec(t, ins+"('20240101000000', 'init', 2, 2, '2024-01-01 00:00:01', 1, NULL, 'h', 'v')",
					ins+"('20240201000000', 'add_email', 1, 1, '2024-02-01 00:00:01', 1, NULL, 'h', 'v')")
				q := SchemaQuery{Tool: ToolAtlas, Min: "20240201000000", Max: "20240201000000"}
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolAtlas, Version: "20240201000000", MinApplied: true, MaxApplied: true})
				s.exec(t, ins+"('20240301000000', 'drop_name', 1, 3, '2024-03-01 00:00:01', 1, 'column in use', 'h', 'v')")
				checkState(t, s.state(t, p, q), SchemaState{Tool: ToolAtlas, Version: "20240201000000", Dirty: 1, MinApplied: true, MaxApplied: true})
			})
		})
	}
}

// TestSchemaQueryIsBounded: the statement runs read-only and under the
// server's own timeout. A "migration table" that is a view sleeping far
// past the probe's timeout is cut short by the server with a denial that
// says so.
func TestSchemaQueryIsBounded(t *testing.T) {
	for _, kind := range schemaKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSchemaDB(t, kind)
			s.exec(t, s.pick("CREATE VIEW alembic_version AS SELECT CAST(pg_sleep(30) AS TEXT) AS version_num",
				"CREATE VIEW alembic_version AS SELECT CAST(SLEEP(30) AS CHAR) AS version_num"))
			p := NewProber(ProberOptions{PrivateCIDRs: loopback, Timeout: time.Second, Ports: []uint16{5432, 3306}})
			start := time.Now()
			res, err := p.ProbeSchema(t.Context(), s.dsn, SchemaQuery{Tool: ToolAlembic})
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("the schema probe took %s: the view's 30 s sleep was not cut short", took)
			}
			if res.Passed() || res.Reason != ReasonQueryFailed || !strings.Contains(res.Message.Render(""), "did not answer the schema query within its statement timeout") {
				t.Errorf("result %s, want the schema query's failure", rendered(res))
			}

			// A write inside the one statement is refused: the session is
			// read-only.
			s.exec(t, s.pick("DROP VIEW alembic_version", "DROP VIEW alembic_version"),
				"CREATE TABLE written (n INT)")
			if kind == "postgres" {
				s.exec(t, `CREATE FUNCTION writes() RETURNS text LANGUAGE sql AS 'INSERT INTO written VALUES (1); SELECT ''x''::text'`,
					"CREATE VIEW alembic_version AS SELECT writes() AS version_num")
			} else {
				s.exec(t, "CREATE FUNCTION writes() RETURNS VARCHAR(8) MODIFIES SQL DATA BEGIN INSERT INTO written VALUES (1); RETURN 'x'; END",
					"CREATE VIEW alembic_version AS SELECT writes() AS version_num")
			}
			res, err = schemaProber().ProbeSchema(t.Context(), s.dsn, SchemaQuery{Tool: ToolAlembic})
			if err != nil {
				t.Fatal(err)
			}
			if res.Passed() || !strings.Contains(res.Message.Render(""), "schema query failed ("+s.pick("SQLSTATE 25006", "mysql error 1792")+")") {
				t.Errorf("result %s, want the server's refusal of a write in a read-only transaction", rendered(res))
			}
			var n int
			if err := s.db.QueryRowContext(t.Context(), "SELECT count(*) FROM written").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("%d rows written by the schema query, want 0", n)
			}
		})
	}
}

// TestSchemaQueryCache: a schema state is reused no longer than a pass,
// and concurrent identical requests share one query (one connection).
func TestSchemaQueryCache(t *testing.T) {
	s := newSchemaDB(t, "postgres")
	s.exec(t, "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
		"INSERT INTO schema_migrations VALUES (1, false)")
	p := NewProber(ProberOptions{PrivateCIDRs: loopback, Timeout: 5 * time.Second, Ports: []uint16{5432}, CacheTTL: time.Minute})
	q := SchemaQuery{Tool: ToolGolangMigrate}
	if got := s.state(t, p, q).Version; got != "1" {
		t.Fatalf("version %q, want 1", got)
	}
	// SELECT 1 and the schema query are different probes of one string.
	if res, err := p.Probe(t.Context(), s.dsn); err != nil || res.Schema != nil {
		t.Fatalf("plain probe: %v, schema %+v", err, res.Schema)
	}
	s.exec(t, "UPDATE schema_migrations SET version = 2")
	deadline := time.Now().Add(10 * time.Second) // hang detector: the pass TTL is 1 s
	for s.state(t, p, q).Version != "2" {
		if time.Now().After(deadline) {
			t.Fatal("the schema state is still version 1 after 10 s; a pass is reused for at most 1 s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Concurrent identical requests: one connection behind a counting
	// proxy serves them all.
	proxy := newCountingProxy(t, "127.0.0.1:5432")
	dsn := strings.Replace(s.dsn, "127.0.0.1:5432", proxy.addr, 1)
	p2 := NewProber(ProberOptions{PrivateCIDRs: loopback, Timeout: 5 * time.Second, Ports: []uint16{portOf(t, proxy.addr)}, CacheTTL: time.Minute})
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			<-start
			res, err := p2.ProbeSchema(t.Context(), dsn, q)
			if err != nil || res.Schema == nil || res.Schema.Version != "2" {
				t.Errorf("concurrent schema probe: %v, %s", err, rendered(res))
			}
		})
	}
	close(start)
	wg.Wait()
	if n := proxy.accepted(); n > 2 {
		t.Errorf("%d connections for 8 identical concurrent requests, want them shared", n)
	}
}

// countingProxy forwards connections to a target and counts them.
type countingProxy struct {
	addr string
	mu   sync.Mutex
	n    int
}

func (c *countingProxy) accepted() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := &countingProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		_ = ln.Close()
		conns.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cp.mu.Lock()
			cp.n++
			cp.mu.Unlock()
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			conns.Store(c, true)
			conns.Store(up, true)
			wg.Go(func() { pipe(c, up) })
			wg.Go(func() { pipe(up, c) })
		}
	})
	return cp
}

func pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

// TestSchemaRowBomb: a server that answers the schema query with a row
// announced as 1 GiB is denied within the probe's memory bounds.
func TestSchemaRowBomb(t *testing.T) {
	verifyNoLeaks(t)
	addr := probetest.NewBomb(t, probetest.PostgresSchemaRowBomb).Addr()
	p := NewProber(ProberOptions{PrivateCIDRs: loopback, Timeout: 10 * time.Second, Ports: []uint16{portOf(t, addr)}})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := p.ProbeSchema(t.Context(), "postgres://app:s3cret@"+addr+"/app?sslmode=disable", SchemaQuery{Tool: ToolGolangMigrate})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	want := denial(ReasonProbeFailed,
		"database at "+addr+" sent more than 1024 KiB, which no postgres server sends to a login and the schema query",
		"check the scheme, host and port in "+secretSource)
	if diff := cmp.Diff(want, rendered(res)); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KiB during the probe", grew>>10)
	if grew > 4<<20 {
		t.Errorf("the probe allocated %d KiB, want under 4 MiB", grew>>10)
	}
}
