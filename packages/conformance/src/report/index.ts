// Public entry of the report and compare modules; the package's src/index.ts
// re-exports from here.

export { MAX_REGRESSION_BOUND_PCT, parseRegressionBound } from "../compare/bound.js";
export {
  type Comparison,
  compareReports,
  type FigureComparison,
  type FigureStatus,
  type VerdictComparison,
  ZERO_BASELINE_EPSILON,
} from "../compare/compare.js";
export { renderComparison } from "../compare/render.js";
export { type RenderInChromiumOptions, type RenderInChromiumResult, renderInChromium } from "./chromium.js";
export { renderHtml } from "./html.js";
export { renderJunit } from "./junit.js";
export { sampleReport } from "./sample.js";
export { renderSummaryTable } from "./table.js";
export { REPORT_SCHEMA_URL, readReport, validateReport } from "./validate.js";
export { REPORT_HTML, REPORT_JSON, REPORT_JUNIT, type ReportPaths, reRender, writeReport } from "./write.js";
