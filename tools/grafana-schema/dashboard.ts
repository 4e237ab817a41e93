/**
 * Entry point for the JSON Schema generator (see generate.sh).
 *
 * The schema is Grafana's own classic (v1, `schemaVersion` ~39-42) dashboard model: the
 * CUE-generated `Dashboard` interface shipped by @grafana/schema in
 * dist/types/raw/dashboard/x/types.gen.d.ts. ts-json-schema-generator closes every object
 * type that has no index signature (`additionalProperties: false`), which is stricter than
 * Grafana itself in a few places. The small overlay below re-opens exactly those places so
 * that dashboards exported by Grafana 10/11/12 validate; everything else is taken as is.
 * Each deviation is listed in README.md.
 */
import type * as raw from './node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen';

/** `current` is written as `{}` when a variable has no selection (e.g. "Export for sharing externally"). */
export interface NoSelection {}

/**
 * Template variable. Grafana's CUE declares it open (`...`) and the frontend writes
 * per-type fields the generated type does not list (query: `definition`; interval:
 * `auto`, `auto_count`, `auto_min`; adhoc: `filters`, `baseFilters`, ...). The listed
 * fields (`name`, `type`, `hide`, `refresh`, `sort`, `current`, ...) stay typed.
 */
export interface DashboardVariable extends Omit<raw.VariableModel, 'current' | 'datasource'> {
  current?: raw.VariableOption | NoSelection;
  /** `null` is allowed, as in the veneer `VariableModel` of the grafana schema package. */
  datasource?: raw.DataSourceRef | null;
  [key: string]: unknown;
}

/**
 * Annotation target. The generated type requires `limit`, `matchAny`, `tags` and `type`,
 * which (per Grafana's CUE comments) are only valid for the built-in "grafana" data source;
 * other data sources put their own query here (the veneer type is a `DataQuery`), and the
 * CUE declares it open. So: the four known fields stay typed, none is required.
 */
export interface DashboardAnnotationTarget extends Partial<raw.AnnotationTarget> {
  [key: string]: unknown;
}

/** Annotation query; open in Grafana's CUE: datasources "spread their query into the base object". */
export interface DashboardAnnotationQuery extends Omit<raw.AnnotationQuery, 'target'> {
  target?: DashboardAnnotationTarget;
  [key: string]: unknown;
}

export interface DashboardAnnotationContainer {
  list?: Array<DashboardAnnotationQuery>;
}

/**
 * A library panel as stored in a dashboard: only a reference (no `type`); the panel model
 * itself lives in the library (and in `__elements` of an external export).
 */
export interface LibraryPanelReference {
  id?: number;
  title?: string;
  gridPos?: raw.GridPos;
  libraryPanel: raw.LibraryPanelRef;
}

/** Row panel; a collapsed row keeps its panels, which may be library panel references too. */
export interface DashboardRowPanel extends Omit<raw.RowPanel, 'panels'> {
  panels: Array<raw.Panel | LibraryPanelReference>;
}

/** The classic (v1) Grafana dashboard JSON model. */
export interface Dashboard extends Omit<raw.Dashboard, 'annotations' | 'panels' | 'templating'> {
  annotations?: DashboardAnnotationContainer;
  panels?: Array<raw.Panel | DashboardRowPanel | LibraryPanelReference>;
  templating?: {
    list?: Array<DashboardVariable>;
  };
  /** "Export for sharing externally": data source inputs asked for on import. */
  __inputs?: Array<Record<string, unknown>>;
  /** "Export for sharing externally": plugins the dashboard needs. */
  __requires?: Array<Record<string, unknown>>;
  /** "Export for sharing externally": library panels used, keyed by uid. */
  __elements?: Record<string, unknown>;
}
