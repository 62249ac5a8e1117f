package probe

import (
	"fmt"
	"strconv"
	"strings"
)

// SchemaTool names a migration tool whose bookkeeping table a schema query
// reads.
type SchemaTool string

// The migration tools a schema query knows.
const (
	ToolGolangMigrate SchemaTool = "golang-migrate"
	ToolGoose         SchemaTool = "goose"
	ToolFlyway        SchemaTool = "flyway"
	ToolLiquibase     SchemaTool = "liquibase"
	ToolAlembic       SchemaTool = "alembic"
	ToolDjango        SchemaTool = "django"
	ToolRails         SchemaTool = "rails"
	ToolPrisma        SchemaTool = "prisma"
	ToolAtlas         SchemaTool = "atlas"
)

// SchemaTools is every tool, in the order messages list them.
func SchemaTools() []SchemaTool {
	return []SchemaTool{ToolGolangMigrate, ToolGoose, ToolFlyway, ToolLiquibase, ToolAlembic, ToolDjango, ToolRails, ToolPrisma, ToolAtlas}
}

// Ordered reports whether the tool's versions have an order the guard can
// compare (integers, or Flyway's dotted versions): then the query reads
// only the current version, and the comparison with a range is the
// caller's. The other tools name their migrations; the query looks up the
// ones asked for.
func (t SchemaTool) Ordered() bool {
	switch t {
	case ToolGolangMigrate, ToolGoose, ToolRails, ToolFlyway:
		return true
	}
	return false
}

// Table is the table the tool keeps its state in, as messages name it.
func (t SchemaTool) Table() string {
	switch t {
	case ToolGolangMigrate, ToolRails:
		return "schema_migrations"
	case ToolGoose:
		return "goose_db_version"
	case ToolFlyway:
		return "flyway_schema_history"
	case ToolLiquibase:
		return "DATABASECHANGELOG"
	case ToolAlembic:
		return "alembic_version"
	case ToolDjango:
		return "django_migrations"
	case ToolPrisma:
		return "_prisma_migrations"
	case ToolAtlas:
		return "atlas_schema_revisions"
	}
	return ""
}

// SchemaQuery asks a probe to read, after the login and over the same
// connection, where the database's migrations stand, instead of SELECT 1.
type SchemaQuery struct {
	Tool SchemaTool
	// Min and Max, for a tool without an order (liquibase, django,
	// prisma, atlas), name the migrations to look up: whether Min is
	// applied, whether Max is, and how many were applied after it. A
	// django name is "app.migration". Ignored for the other tools.
	Min, Max string
}

// key is what the query adds to a probe's cache and flight key: the same
// string probed with another query is another probe.
func (q *SchemaQuery) key() string {
	if q == nil {
		return ""
	}
	if q.Tool.Ordered() || q.Tool == ToolAlembic {
		return "\x00schema\x00" + string(q.Tool)
	}
	return "\x00schema\x00" + string(q.Tool) + "\x00" + q.Min + "\x00" + q.Max
}

// maxSchemaValue bounds each string a schema query reads (a version, a
// migration name); the query cuts it on the server.
const maxSchemaValue = 255

// SchemaState is where a database's migrations stand, as one schema query
// read it.
type SchemaState struct {
	Tool SchemaTool
	// Missing is set when the tool's table does not exist (or its columns
	// are not the tool's).
	Missing bool
	// Version is the current version: for an ordered tool the latest
	// applied, for the others the name of the latest applied migration
	// (by applied order); for alembic the current revision. Empty when
	// none is applied.
	Version string
	// Heads is, for alembic, the current revisions (more than one while
	// branches are unmerged), at most two; HeadCount counts them up to
	// three.
	Heads     []string
	HeadCount int
	// Dirty counts the migrations that failed or did not finish
	// (golang-migrate's dirty flag, Flyway's failed rows, Prisma's
	// unfinished ones, Atlas's partly applied or failed ones).
	Dirty int
	// Locked is set while Liquibase's changelog lock is held: a
	// migration is running.
	Locked bool
	// MinApplied, MaxApplied and AfterMax answer the query's Min and Max
	// for a tool without an order: whether each is applied, and how many
	// migrations (of the same django app) were applied after Max.
	MinApplied, MaxApplied bool
	AfterMax               int
}

// schemaSQL is the one statement a query runs, with ? for its parameters
// (rewritten to $n for PostgreSQL), and the parameters. Every statement
// returns one row of six columns: version, dirty, locked, min applied, max
// applied, applied after max; strings cut to maxSchemaValue bytes.
func schemaSQL(q *SchemaQuery, postgres bool) (string, []string) {
	cut := func(expr string) string { return fmt.Sprintf("SUBSTR(%s, 1, %d)", expr, maxSchemaValue) }
	var cols [6]string
	for i := range cols {
		cols[i] = "0"
	}
	var args []string
	switch q.Tool {
	case ToolGolangMigrate:
		cols[0] = "(SELECT version FROM schema_migrations ORDER BY version DESC LIMIT 1)"
		cols[1] = "(SELECT count(*) FROM (SELECT 1 FROM schema_migrations WHERE dirty LIMIT 16) d)"
	case ToolGoose:
		// The latest version applied and not undone: goose deletes the
		// row of a migration rolled back, older versions record it with
		// is_applied false.
		cols[0] = "(SELECT max(version_id) FROM goose_db_version g WHERE is_applied AND NOT EXISTS " +
			"(SELECT 1 FROM goose_db_version h WHERE h.version_id = g.version_id AND h.id > g.id))"
	case ToolRails:
		cols[0] = "(SELECT " + cut("version") + " FROM schema_migrations ORDER BY LENGTH(version) DESC, version DESC LIMIT 1)"
	case ToolFlyway:
		cols[0] = "(SELECT " + cut("version") + " FROM flyway_schema_history WHERE success AND version IS NOT NULL ORDER BY installed_rank DESC LIMIT 1)"
		cols[1] = "(SELECT count(*) FROM (SELECT 1 FROM flyway_schema_history WHERE NOT success LIMIT 16) f)"
	case ToolAlembic:
		cols[0] = "(SELECT " + cut("min(version_num)") + " FROM alembic_version)"
		cols[3] = "(SELECT " + cut("max(version_num)") + " FROM alembic_version)"
		cols[4] = "(SELECT count(*) FROM (SELECT 1 FROM alembic_version LIMIT 3) a)"
	case ToolLiquibase:
		cols[0] = "(SELECT " + cut("ID") + " FROM DATABASECHANGELOG ORDER BY ORDEREXECUTED DESC LIMIT 1)"
		cols[2] = "(SELECT count(*) FROM DATABASECHANGELOGLOCK WHERE LOCKED)"
		cols[3] = "(SELECT count(*) FROM (SELECT 1 FROM DATABASECHANGELOG WHERE ID = ? LIMIT 1) n)"
		cols[4] = "(SELECT count(*) FROM (SELECT 1 FROM DATABASECHANGELOG WHERE ID = ? LIMIT 1) x)"
		cols[5] = "(SELECT count(*) FROM (SELECT 1 FROM DATABASECHANGELOG WHERE ORDEREXECUTED > " +
			"(SELECT max(ORDEREXECUTED) FROM DATABASECHANGELOG WHERE ID = ?) LIMIT 1000) a)"
		args = []string{q.Min, q.Max, q.Max}
	case ToolDjango:
		minApp, minName, _ := strings.Cut(q.Min, ".")
		maxApp, maxName, _ := strings.Cut(q.Max, ".")
		cols[0] = "(SELECT " + cut("CONCAT(app, '.', name)") + " FROM django_migrations ORDER BY id DESC LIMIT 1)"
		cols[3] = "(SELECT count(*) FROM (SELECT 1 FROM django_migrations WHERE app = ? AND name = ? LIMIT 1) n)"
		cols[4] = "(SELECT count(*) FROM (SELECT 1 FROM django_migrations WHERE app = ? AND name = ? LIMIT 1) x)"
		cols[5] = "(SELECT count(*) FROM (SELECT 1 FROM django_migrations WHERE app = ? AND id > " +
			"(SELECT min(id) FROM django_migrations WHERE app = ? AND name = ?) LIMIT 1000) a)"
		args = []string{minApp, minName, maxApp, maxName, maxApp, maxApp, maxName}
	case ToolPrisma:
		const applied = "finished_at IS NOT NULL AND rolled_back_at IS NULL"
		cols[0] = "(SELECT " + cut("migration_name") + " FROM _prisma_migrations WHERE " + applied + " ORDER BY finished_at DESC LIMIT 1)"
		cols[1] = "(SELECT count(*) FROM (SELECT 1 FROM _prisma_migrations WHERE finished_at IS NULL AND rolled_back_at IS NULL LIMIT 16) f)"
		cols[3] = "(SELECT count(*) FROM (SELECT 1 FROM _prisma_migrations WHERE migration_name = ? AND " + applied + " LIMIT 1) n)"
		cols[4] = "(SELECT count(*) FROM (SELECT 1 FROM _prisma_migrations WHERE migration_name = ? AND " + applied + " LIMIT 1) x)"
		cols[5] = "(SELECT count(*) FROM (SELECT 1 FROM _prisma_migrations WHERE " + applied + " AND finished_at > " +
			"(SELECT max(finished_at) FROM _prisma_migrations WHERE migration_name = ? AND " + applied + ") LIMIT 1000) a)"
		args = []string{q.Min, q.Max, q.Max}
	case ToolAtlas:
		// PostgreSQL keeps the table in its own schema; MySQL in the
		// database the connection string names.
		table := "atlas_schema_revisions"
		if postgres {
			table = "atlas_schema_revisions.atlas_schema_revisions"
		}
		const done = "applied = total AND (error IS NULL OR error = '')"
		cols[0] = "(SELECT " + cut("version") + " FROM " + table + " WHERE " + done + " ORDER BY executed_at DESC, version DESC LIMIT 1)"
		cols[1] = "(SELECT count(*) FROM (SELECT 1 FROM " + table + " WHERE NOT (" + done + ") LIMIT 16) f)"
		cols[3] = "(SELECT count(*) FROM (SELECT 1 FROM " + table + " WHERE version = ? AND " + done + " LIMIT 1) n)"
		cols[4] = "(SELECT count(*) FROM (SELECT 1 FROM " + table + " WHERE version = ? AND " + done + " LIMIT 1) x)"
		cols[5] = "(SELECT count(*) FROM (SELECT 1 FROM " + table + " WHERE " + done + " AND executed_at > " +
			"(SELECT max(executed_at) FROM " + table + " WHERE version = ?) LIMIT 1000) a)"
		args = []string{q.Min, q.Max, q.Max}
	}
	sql := "SELECT " + strings.Join(cols[:], ", ")
	if postgres {
		var b strings.Builder
		n := 0
		for _, r := range sql {
			if r == '?' {
				n++
				fmt.Fprintf(&b, "$%d", n)
				continue
			}
			b.WriteRune(r)
		}
		sql = b.String()
	}
	return sql, args
}

// schemaState reads the one row of a schema query: nil values are NULL.
func schemaState(q *SchemaQuery, row []*string) (*SchemaState, error) {
	if len(row) != 6 {
		return nil, fmt.Errorf("schema query returned %d columns", len(row))
	}
	s := &SchemaState{Tool: q.Tool}
	num := func(i int) (int, error) {
		if row[i] == nil {
			return 0, nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(*row[i]))
		if err != nil || n < 0 {
			return 0, fmt.Errorf("schema query column %d is not a count", i+1)
		}
		return n, nil
	}
	var err error
	if row[0] != nil {
		s.Version = cutString(*row[0])
	}
	if q.Tool == ToolAlembic {
		if s.Version != "" {
			s.Heads = []string{s.Version}
		}
		if row[3] != nil && cutString(*row[3]) != s.Version {
			s.Heads = append(s.Heads, cutString(*row[3]))
		}
		n, err := num(4)
		if err != nil {
			return nil, err
		}
		s.HeadCount = max(n, len(s.Heads))
		return s, nil
	}
	if s.Dirty, err = num(1); err != nil {
		return nil, err
	}
	locked, err := num(2)
	if err != nil {
		return nil, err
	}
	s.Locked = locked > 0
	minApplied, err := num(3)
	if err != nil {
		return nil, err
	}
	maxApplied, err := num(4)
	if err != nil {
		return nil, err
	}
	s.MinApplied, s.MaxApplied = minApplied > 0, maxApplied > 0
	if s.AfterMax, err = num(5); err != nil {
		return nil, err
	}
	if q.Tool == ToolGoose && s.Version == "0" {
		s.Version = "" // goose's own first row: nothing applied
	}
	return s, nil
}

// cutString bounds a value read from the server and keeps it printable.
func cutString(s string) string {
	if len(s) > maxSchemaValue {
		s = s[:maxSchemaValue]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}
