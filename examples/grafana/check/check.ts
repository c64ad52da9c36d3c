// Type-checks the dashboard against the dashboard types that Grafana
// publishes for the Grafana version the dashboard names (@grafana/schema,
// pinned in package.json to that version). `tsc -p .` fails when it does
// not fit. What this can and cannot catch is in NOTES-grafana.md; the Go
// test (examples/grafana_test.go) checks the rest.
import dashboard from "../ai-gateway-auth-dashboard.json";
import type { Dashboard, FieldConfig, Panel } from "@grafana/schema";
import type * as Table from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";
import type * as TimeSeries from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";

// Panels are read with the options and field config of the panel plugins
// the dashboard uses (timeseries, table), as the same release publishes
// them, not as Panel's open Record<string, unknown>.
type PanelShape = Omit<Panel, "options" | "fieldConfig"> & {
  options?: TimeSeries.Options | Table.Options;
  fieldConfig?: {
    defaults: Omit<FieldConfig, "custom"> & { custom?: TimeSeries.FieldConfig | Table.FieldConfig };
    overrides: NonNullable<Panel["fieldConfig"]>["overrides"];
  };
};
type DashboardShape = Omit<Dashboard, "panels"> & { panels?: PanelShape[] };

// 1. Types and required fields. Every field the schema knows has its type
// (gridPos.h a number, title a string, targets an array, ...) and every
// field it requires is there (schemaVersion; gridPos h, w, x and y;
// fieldConfig defaults and overrides; an override's matcher id; a
// transformation's id and options; a variable's name; a timeseries
// panel's legend and tooltip, a table's showHeader and frameIndex).
// An imported JSON string is typed `string`, never an enum member or a
// string literal, so Loose reads those types as string (or number):
// enum values themselves are checked by the Go test.
type Loose<T> = T extends string
  ? string
  : T extends number
    ? number
    : T extends boolean
      ? boolean
      : T extends readonly (infer E)[]
        ? Loose<E>[]
        : T extends object
          ? { [K in keyof T]: Loose<T[K]> }
          : T;
export const typed: Loose<DashboardShape> = dashboard;

// 2. No key that the schema does not know, at any depth where the schema
// lists the keys. TypeScript checks excess keys on object literals only,
// never on an imported JSON value, so Known<T, S> types every key of T
// that the shape S lacks `never`, and a misspelled key ("gridpos",
// "fieldconfig", "showLegnd") fails the assignment. Where S is open
// (unknown, any, or a Record<string, ...>: a query, a transformation's
// options, an override's value) T is taken as it is.
type Known<T, S> = S extends unknown ? KnownIn<T, S> : never;
type KnownIn<T, S> = unknown extends S
  ? T
  : string extends keyof S
    ? T
    : T extends readonly (infer E)[]
      ? S extends readonly (infer SE)[]
        ? Known<E, SE>[]
        : never
      : T extends object
        ? S extends object
          ? { [K in keyof T]: K extends keyof S ? Known<T[K], Exclude<S[K], undefined | null>> : never }
          : never
        : T;
type Imported = Omit<typeof dashboard, "__requires">; // the import convention, not in the schema
export const known: Known<Imported, DashboardShape> = dashboard;
