package checks

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// CheckSchema is the opt-in schema gate: the migration state of a target's
// database, read over the database check's connection, against the range of
// schema versions the target's code runs on.
const CheckSchema Check = "schema"

// The schema gate's annotations, on a workload (any kind the deployment
// check judges). AnnotationSchemaTool turns the gate on.
const (
	// AnnotationSchemaTool names the migration tool whose table the guard
	// reads: golang-migrate, goose, flyway, liquibase, alembic, django,
	// rails, prisma or atlas.
	AnnotationSchemaTool = "cutover-guard.dev/schema-tool"
	// AnnotationSchemaMin is the migration the workload's code needs: a
	// switch to it is denied until it is applied.
	AnnotationSchemaMin = "cutover-guard.dev/schema-min"
	// AnnotationSchemaMax is the newest migration the workload's code
	// tolerates: a switch to it is denied once a later one is applied
	// (the contract step of an expand/contract release has run).
	AnnotationSchemaMax = "cutover-guard.dev/schema-max"
)

// Reasons of the schema gate; all deny.
const (
	// ReasonSchemaAnnotationInvalid: a schema annotation has a bad value,
	// or schema-min/max is given without schema-tool.
	ReasonSchemaAnnotationInvalid Reason = "SchemaAnnotationInvalid"
	// ReasonSchemaNoDatabase: a workload declares a tool but the guard
	// found no connection string of it to read the table over.
	ReasonSchemaNoDatabase Reason = "SchemaNoDatabase"
	// ReasonSchemaTableMissing: the tool's table is not in the database.
	ReasonSchemaTableMissing Reason = "SchemaTableMissing"
	// ReasonSchemaDirty: a migration failed or did not finish.
	ReasonSchemaDirty Reason = "SchemaDirty"
	// ReasonSchemaLocked: a migration is running (Liquibase's lock).
	ReasonSchemaLocked Reason = "SchemaLocked"
	// ReasonSchemaBehind: the schema is older than schema-min.
	ReasonSchemaBehind Reason = "SchemaBehind"
	// ReasonSchemaAhead: the schema is newer than schema-max.
	ReasonSchemaAhead Reason = "SchemaAhead"
	// ReasonSchemaUnreadable: the tool's table holds a version that is
	// not the tool's syntax.
	ReasonSchemaUnreadable Reason = "SchemaUnreadable"
)

// Bounds on the annotations' values.
const (
	maxSchemaName      = 255 // a migration name, id or revision
	maxSchemaDigits    = 20  // an integer version
	maxFlywayVersion   = 50  // flyway_schema_history.version is VARCHAR(50)
	maxAlembicRevision = 32  // alembic_version.version_num is VARCHAR(32)
	maxAlembicListed   = 16
)

// schemaSpec is the valid schema annotations of one workload.
type schemaSpec struct {
	workload string // "deployment app-green"
	name     string // the workload's name, for fixes
	tool     probe.SchemaTool
	min, max string   // as written (alembic: min is the list)
	revs     []string // alembic: the revisions of schema-min
}

// query is what the probe is asked for this spec.
func (s *schemaSpec) query() probe.SchemaQuery {
	q := probe.SchemaQuery{Tool: s.tool}
	if !s.tool.Ordered() && s.tool != probe.ToolAlembic {
		q.Min, q.Max = s.min, s.max
	}
	return q
}

// schemaSyntax is the accepted syntax of schema-min and schema-max for a tool.
func schemaSyntax(t probe.SchemaTool) string {
	switch t {
	case probe.ToolGolangMigrate, probe.ToolGoose, probe.ToolRails:
		return "an unsigned integer version, e.g. 20240301120000"
	case probe.ToolFlyway:
		return "a dotted version, e.g. 2.1 or 2_1"
	case probe.ToolDjango:
		return "app.migration, e.g. shop.0002_order_email"
	case probe.ToolAlembic:
		return fmt.Sprintf("schema-min: the revisions this code runs on, comma-separated (at most %d), e.g. ae1027a6acf,27c6a30d7c24; no schema-max", maxAlembicListed)
	case probe.ToolLiquibase:
		return "a changeset id, e.g. add-email"
	case probe.ToolPrisma:
		return "a migration name, e.g. 20240201000000_add_email"
	case probe.ToolAtlas:
		return "a migration version, e.g. 20240201000000"
	}
	return ""
}

func toolList() string {
	names := make([]string, 0, 9)
	for _, t := range probe.SchemaTools() {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}

// parseSchemaSpec reads w's schema annotations: nil and no error when it
// declares none; an error message naming the annotation and its accepted
// syntax when one is bad.
func parseSchemaSpec(w *Workload) (*schemaSpec, string) {
	a := w.Object.GetAnnotations()
	tool, hasTool := a[AnnotationSchemaTool]
	minV, hasMin := a[AnnotationSchemaMin]
	maxV, hasMax := a[AnnotationSchemaMax]
	ref := w.Ref()
	if !hasTool {
		for _, n := range []string{AnnotationSchemaMin, AnnotationSchemaMax} {
			if _, ok := a[n]; ok {
				return nil, fmt.Sprintf("annotation %s of %s needs annotation %s (one of %s)", n, ref, AnnotationSchemaTool, toolList())
			}
		}
		return nil, ""
	}
	t := probe.SchemaTool(tool)
	if !slices.Contains(probe.SchemaTools(), t) {
		return nil, fmt.Sprintf("annotation %s of %s is %s; want one of %s", AnnotationSchemaTool, ref, quoteValue(tool), toolList())
	}
	s := &schemaSpec{workload: ref, name: w.Name(), tool: t}
	bad := func(name, v string) string {
		return fmt.Sprintf("annotation %s of %s is %s; for %s want %s", name, ref, quoteValue(v), t, schemaSyntax(t))
	}
	if t == probe.ToolAlembic {
		if hasMax {
			return nil, fmt.Sprintf("annotation %s of %s: alembic records only the current revision, not which came before; list every revision this code runs on in %s instead",
				AnnotationSchemaMax, ref, AnnotationSchemaMin)
		}
		if hasMin {
			for r := range strings.SplitSeq(minV, ",") {
				if !validAlembicRevision(r) || slices.Contains(s.revs, r) || len(s.revs) == maxAlembicListed {
					return nil, bad(AnnotationSchemaMin, minV)
				}
				s.revs = append(s.revs, r)
			}
			s.min = minV
		}
		return s, ""
	}
	for _, v := range []struct {
		name, value string
		has         bool
		to          *string
	}{{AnnotationSchemaMin, minV, hasMin, &s.min}, {AnnotationSchemaMax, maxV, hasMax, &s.max}} {
		if !v.has {
			continue
		}
		norm, ok := normalizeSchemaVersion(t, v.value)
		if !ok {
			return nil, bad(v.name, v.value)
		}
		*v.to = norm
	}
	if hasMin && hasMax && t.Ordered() && compareSchemaVersions(t, s.min, s.max) > 0 {
		return nil, fmt.Sprintf("annotations of %s: %s %s is newer than %s %s; want min <= max",
			ref, AnnotationSchemaMin, s.min, AnnotationSchemaMax, s.max)
	}
	return s, ""
}

// normalizeSchemaVersion checks v against t's syntax and returns it in the
// form the comparison and the query use.
func normalizeSchemaVersion(t probe.SchemaTool, v string) (string, bool) {
	switch t {
	case probe.ToolGolangMigrate, probe.ToolGoose, probe.ToolRails:
		if v == "" || len(v) > maxSchemaDigits || strings.Trim(v, "0123456789") != "" {
			return "", false
		}
		if v = strings.TrimLeft(v, "0"); v == "" {
			v = "0"
		}
		return v, true
	case probe.ToolFlyway:
		if v == "" || len(v) > maxFlywayVersion {
			return "", false
		}
		v = strings.ReplaceAll(v, "_", ".")
		for p := range strings.SplitSeq(v, ".") {
			if p == "" || strings.Trim(p, "0123456789") != "" {
				return "", false
			}
		}
		return v, true
	case probe.ToolDjango:
		app, name, ok := strings.Cut(v, ".")
		if !ok || len(v) > maxSchemaName || !isIdent(app, true) || !isIdent(name, false) {
			return "", false
		}
		return v, true
	default: // liquibase, prisma, atlas: a name
		if v == "" || len(v) > maxSchemaName || strings.TrimSpace(v) != v {
			return "", false
		}
		for _, r := range v {
			if r < 0x20 || r > 0x7e {
				return "", false
			}
		}
		return v, true
	}
}

func isIdent(s string, letterFirst bool) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9':
			if i == 0 && letterFirst {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func validAlembicRevision(r string) bool {
	return len(r) <= maxAlembicRevision && isIdent(r, false)
}

// compareSchemaVersions orders two versions of an ordered tool, both
// normalized (or read from the tool's table): integers by value, Flyway's
// dotted versions part by part, trailing zero parts ignored (1.0 = 1).
func compareSchemaVersions(t probe.SchemaTool, a, b string) int {
	if t != probe.ToolFlyway {
		return compareDigits(a, b)
	}
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		x, y := "0", "0"
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if c := compareDigits(x, y); c != 0 {
			return c
		}
	}
	return 0
}

// compareDigits orders two strings of decimal digits by value.
func compareDigits(a, b string) int {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// schemaSpecs parses the schema annotations of each workload: specs[i] is
// workloads[i]'s, nil when it declares none or they are bad (a finding).
func schemaSpecs(svc types.NamespacedName, workloads []Workload) ([]*schemaSpec, []Finding) {
	specs := make([]*schemaSpec, len(workloads))
	var findings []Finding
	for i := range workloads {
		s, msg := parseSchemaSpec(&workloads[i])
		if msg != "" {
			findings = append(findings, Finding{Check: CheckSchema, Severity: Deny, Service: svc, Object: workloads[i].Ref(),
				Reason: ReasonSchemaAnnotationInvalid, Message: msg,
				Fix: fmt.Sprintf("fix the annotation on %s (see the schema gate in the README)", workloads[i].kubectlRef())})
			continue
		}
		specs[i] = s
	}
	return specs, findings
}

// migrateCommand is how the tool's migrations are usually run, for fixes.
func migrateCommand(t probe.SchemaTool) string {
	switch t {
	case probe.ToolGolangMigrate:
		return "migrate -path <dir> -database <url> up"
	case probe.ToolGoose:
		return "goose up"
	case probe.ToolFlyway:
		return "flyway migrate"
	case probe.ToolLiquibase:
		return "liquibase update"
	case probe.ToolAlembic:
		return "alembic upgrade head"
	case probe.ToolDjango:
		return "python manage.py migrate"
	case probe.ToolRails:
		return "bin/rails db:migrate"
	case probe.ToolPrisma:
		return "prisma migrate deploy"
	case probe.ToolAtlas:
		return "atlas migrate apply"
	}
	return ""
}

// schemaVerdict judges the state read for spec over the connection string
// found at src: the findings of a state outside the range, or broken.
func schemaVerdict(svc types.NamespacedName, spec *schemaSpec, src dsnSource, st *probe.SchemaState) []Finding {
	db := "the database in " + src.String()
	t := spec.tool
	deny := func(reason Reason, msg, fix string) Finding {
		f := Finding{Check: CheckSchema, Severity: Deny, Service: svc, Object: spec.workload, Reason: reason, Message: msg, Fix: fix}
		// The text names where the string came from and what its database
		// holds: it is read from the objects the string was read from.
		if objs := src.revealed(); len(objs) > 0 {
			f.Reveals, f.Source = objs, src.String()
		}
		return f
	}
	run := fmt.Sprintf("run %s's migrations: %s, then retry", spec.name, migrateCommand(t))
	if st.Missing {
		return []Finding{deny(ReasonSchemaTableMissing,
			fmt.Sprintf("%s declares %s %s but %s has no %s table %s", spec.workload, AnnotationSchemaTool, t, db, t, t.Table()),
			fmt.Sprintf("%s; or correct %s (and the connection string) if the database is another's", run, AnnotationSchemaTool))}
	}
	if t.Ordered() && st.Version != "" {
		v, ok := normalizeSchemaVersion(t, st.Version)
		if !ok {
			return []Finding{deny(ReasonSchemaUnreadable,
				fmt.Sprintf("the %s table %s of %s holds version %q, which is not %s", t, t.Table(), db, probe.Printable(st.Version), schemaSyntax(t)),
				fmt.Sprintf("check that %s is the tool that migrates this database (%s)", t, AnnotationSchemaTool))}
		}
		st = &probe.SchemaState{Tool: st.Tool, Version: v, Dirty: st.Dirty}
	}
	var out []Finding
	if st.Dirty > 0 {
		var msg, fix string
		switch t {
		case probe.ToolGolangMigrate:
			msg = fmt.Sprintf("the golang-migrate schema of %s is dirty at version %s: a migration failed halfway", db, probe.Printable(st.Version))
			fix = fmt.Sprintf("repair the schema by hand, mark it (migrate force %s, or the version before), then %s", probe.Printable(st.Version), run)
		case probe.ToolFlyway:
			msg = fmt.Sprintf("%s has %s in flyway_schema_history", db, plural(st.Dirty, "failed migration", "failed migrations"))
			fix = "repair the schema, run flyway repair, then " + run
		case probe.ToolPrisma:
			msg = fmt.Sprintf("%s has %s in _prisma_migrations (failed, or still running)", db, plural(st.Dirty, "unfinished migration", "unfinished migrations"))
			fix = "wait for a running migration; resolve a failed one (prisma migrate resolve), then " + run
		default: // atlas
			msg = fmt.Sprintf("%s has %s in atlas_schema_revisions", db, plural(st.Dirty, "partly applied or failed migration", "partly applied or failed migrations"))
			fix = "fix the failed statement (atlas migrate status), then " + run
		}
		out = append(out, deny(ReasonSchemaDirty, msg, fix))
	}
	if st.Locked {
		out = append(out, deny(ReasonSchemaLocked,
			fmt.Sprintf("the liquibase changelog lock of %s is held: a migration is running", db),
			"wait for it to finish and retry; if none runs, release the lock (liquibase release-locks)"))
	}
	current := probe.Printable(st.Version)
	if st.Version == "" {
		current = "no migration applied"
	}
	if behind := schemaBehind(spec, st); behind != "" {
		out = append(out, deny(ReasonSchemaBehind,
			fmt.Sprintf("%s needs %s (%s) but the %s schema of %s %s", spec.workload, spec.min, AnnotationSchemaMin, t, db, behind), run))
	}
	if spec.max != "" {
		ahead := false
		if t.Ordered() {
			ahead = st.Version != "" && compareSchemaVersions(t, st.Version, spec.max) > 0
		} else {
			ahead = st.MaxApplied && st.AfterMax > 0
		}
		if ahead {
			noun, verb := "migrations", "were"
			if st.AfterMax == 1 {
				noun, verb = "migration", "was"
			}
			count := strconv.Itoa(st.AfterMax)
			if st.AfterMax >= 1000 {
				count = "1000 or more"
			}
			what := fmt.Sprintf("is at %s", current)
			if !t.Ordered() {
				what = fmt.Sprintf("has moved on: %s %s %s applied after it (latest %s)", count, noun, verb, current)
				if t == probe.ToolDjango {
					app, _, _ := strings.Cut(spec.max, ".")
					what = fmt.Sprintf("has moved on: %s %s of app %s %s applied after it", count, noun, app, verb)
				}
			}
			out = append(out, deny(ReasonSchemaAhead,
				fmt.Sprintf("%s runs on schemas up to %s (%s) but the %s schema of %s %s: its code would break on it", spec.workload, spec.max, AnnotationSchemaMax, t, db, what),
				fmt.Sprintf("keep the traffic where it is and roll forward instead; switching back to %s needs the schema migrated down to %s first", spec.name, spec.max)))
		}
	}
	return out
}

// schemaBehind says how the state falls short of spec's min ("is at version
// 3"), or "" when it does not.
func schemaBehind(spec *schemaSpec, st *probe.SchemaState) string {
	if spec.min == "" {
		return ""
	}
	t := spec.tool
	switch {
	case t == probe.ToolAlembic:
		if st.HeadCount == 0 {
			return "has no revision applied"
		}
		if st.HeadCount > len(st.Heads) {
			return fmt.Sprintf("has %d heads (unmerged branches)", st.HeadCount)
		}
		for _, h := range st.Heads {
			if !slices.Contains(spec.revs, h) {
				return "is at revision " + probe.Printable(h)
			}
		}
		return ""
	case t.Ordered():
		if st.Version == "" {
			return "has no migration applied"
		}
		if compareSchemaVersions(t, st.Version, spec.min) < 0 {
			return "is at version " + probe.Printable(st.Version)
		}
		return ""
	default:
		if st.MinApplied {
			return ""
		}
		if st.Version == "" {
			return "has no migration applied"
		}
		return fmt.Sprintf("has not applied it (latest applied: %s)", probe.Printable(st.Version))
	}
}

// quoteValue quotes an annotation's value for a message, cut to 64 bytes.
func quoteValue(v string) string {
	if len(v) > 64 {
		return strconv.Quote(v[:64]) + "..."
	}
	return strconv.Quote(v)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	if n >= 16 {
		return "16 or more " + many
	}
	return fmt.Sprintf("%d %s", n, many)
}
