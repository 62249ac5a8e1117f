// Package probe decides whether a database connection string leads to a
// database that answers: the string parses (postgres://, postgresql:// with
// pgx; mysql:// with go-sql-driver), every address of its hosts is private,
// a TCP connection opens within the budget, and TLS, the login, the database
// and SELECT 1 work as the string demands. Each way it can fail has its own
// Reason and a Result in our own words. ProbeSchema, instead of SELECT 1,
// reads where a migration tool's migrations stand (SchemaQuery, SchemaState)
// with one read-only statement the server bounds in time.
//
// It must not import Kubernetes packages or package checks: where a
// connection string came from, and whether an outcome blocks a cutover, is
// the caller's to say. A Result names the place the string came from only
// as a slot (Text) the caller fills. No Result, error, log or panic may
// carry a password or the connection string; driver error text is never
// passed on. Probes dial only the addresses the host policy checked, and a
// connection a driver opens outside a probe is refused.
package probe
