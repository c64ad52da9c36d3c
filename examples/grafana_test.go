package examples

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"gopkg.in/yaml.v3"
)

// The Grafana and Prometheus examples, and the TypeScript project that
// checks the dashboard against Grafana's published schema.
const (
	dashboardPath  = "grafana/ai-gateway-auth-dashboard.json"
	alertsPath     = "grafana/alerts.yml"
	promConfigPath = "grafana/prometheus.yml"
	checkDir       = "grafana/check"
)

// scrapeLabels are the labels a Prometheus scrape sets on every series it
// takes in. Under the default honor_labels: false, a series' own label of
// the same name is renamed exported_<name>.
var scrapeLabels = []string{"instance", "job"}

// TestGrafanaDashboard: the dashboard JSON loads, has the panels the
// operators asked for, and every query names only metrics that the module
// really exports and only labels those metrics have after a default
// Prometheus scrape. The names and labels come from the /metrics of a
// Caddy running in this process with the module (a minted OIDC token, a
// limit, metering), after it has served requests, not from a list written
// here. The alert rules are held to the same. Then each check is shown to
// catch what it is for, on altered copies of the dashboard.
func TestGrafanaDashboard(t *testing.T) {
	raw := readFile(t, dashboardPath)
	fams := exportedMetrics(t)
	for _, p := range checkDashboard(raw, fams) {
		t.Error(p)
	}
	for _, p := range checkAlerts(readFile(t, alertsPath), fams) {
		t.Errorf("%s: %s", alertsPath, p)
	}
	for _, p := range checkPromConfig(readFile(t, promConfigPath)) {
		t.Errorf("%s: %s", promConfigPath, p)
	}
	for _, p := range checkVersions(raw, readFile(t, checkDir+"/package.json"), readFile(t, checkDir+"/package-lock.json")) {
		t.Error(p)
	}
	t.Run("catches", func(t *testing.T) { testDashboardChecksCatch(t, raw, fams) })
	t.Run("alerts catch", func(t *testing.T) {
		alerts, prom := string(readFile(t, alertsPath)), string(readFile(t, promConfigPath))
		for _, c := range []struct{ old, new, want string }{
			{"$labels.source_id", "$labels.exported_instance", "names $labels.exported_instance, which the expression's result does not have"},
			{`result="failure"`, `result="failed"`, `result="failed": no series`},
			{`requests_total{outcome="no_credential"}`, `requests_total{outcome="forwarded"}`, `no rule's expression matches caddy_ai_gateway_auth_requests_total\{outcome="no_credential"\}`},
			{"caddy_ai_gateway_auth_credential_expiry_seconds < 300", "caddy_ai_gateway_auth_credential_expiry_seconds{instance=~\".+\"} < 300", "no rule's expression matches ^caddy_ai_gateway_auth_credential_expiry_seconds"},
			{"        for: 1m\n", "        for: 1 minute\n", `for "1 minute" is not a Prometheus duration`},
			{"expr:", "exp:", "field exp not found"},
		} {
			if !strings.Contains(alerts, c.old) {
				t.Fatalf("%s no longer has %q; update this test", alertsPath, c.old)
			}
			problems := checkAlerts([]byte(strings.Replace(alerts, c.old, c.new, 1)), fams)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Errorf("%q -> %q: no problem names %q; problems: %q", c.old, c.new, c.want, problems)
			}
		}
		for _, c := range []struct{ old, new, want string }{
			{"    metrics_path: /metrics\n", "    metrics_path: /metrics\n    honor_labels: true\n", "honor_labels: true"},
			{"  - alerts.yml\n", "  - rules.yml\n", "does not load alerts.yml"},
		} {
			if !strings.Contains(prom, c.old) {
				t.Fatalf("%s no longer has %q; update this test", promConfigPath, c.old)
			}
			problems := checkPromConfig([]byte(strings.Replace(prom, c.old, c.new, 1)))
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Errorf("%q -> %q: no problem names %q; problems: %q", c.old, c.new, c.want, problems)
			}
		}
	})
}

// testDashboardChecksCatch alters one thing of the dashboard at a time,
// the old dashboard's defects among them, and expects checkDashboard to
// name it. The dashboard itself must have no problem, so that a case
// cannot pass on some other one.
func testDashboardChecksCatch(t *testing.T, raw []byte, fams families) {
	panelByTitle := func(d map[string]any, prefix string) map[string]any {
		for _, p := range d["panels"].([]any) {
			if p := p.(map[string]any); strings.HasPrefix(p["title"].(string), prefix) {
				return p
			}
		}
		t.Fatalf("no panel %q", prefix)
		return nil
	}
	firstTarget := func(p map[string]any) map[string]any { return p["targets"].([]any)[0].(map[string]any) }
	expiry := func(d map[string]any) map[string]any { return panelByTitle(d, "Credential time to expiry") }
	table := func(d map[string]any) map[string]any { return panelByTitle(d, "Tokens and cost per client") }
	// The module before source_id: the expiry gauge labelled sources instance.
	oldFams := maps.Clone(fams)
	oldFams["caddy_ai_gateway_auth_credential_expiry_seconds"] = &family{labels: map[string]bool{"source": true, "instance": true}}

	if problems := checkDashboard(raw, fams); len(problems) > 0 {
		t.Fatalf("the altered copies are made from a dashboard without problems, and this one has %d", len(problems))
	}
	cases := []struct {
		name  string
		fams  families
		alter func(d map[string]any)
		want  string
	}{
		{"old expiry legend", fams, func(d map[string]any) {
			firstTarget(expiry(d))["legendFormat"] = "{{source}} {{instance}}"
		}, "does not name source_id"},
		{"old module: the expiry gauge's own instance label", oldFams, func(d map[string]any) {
			firstTarget(expiry(d))["legendFormat"] = "{{source}} {{instance}}"
		}, "renames it exported_instance"},
		{"exported_instance", fams, func(d map[string]any) {
			firstTarget(expiry(d))["expr"] = `caddy_ai_gateway_auth_credential_expiry_seconds{exported_instance!=""}`
		}, "exported_instance is not a label of"},
		{"by a label the metric lacks", fams, func(d map[string]any) {
			firstTarget(panelByTitle(d, "Credential refreshes"))["expr"] = "sum by (source_id) (increase(caddy_ai_gateway_auth_credential_refreshes_total[5m]))"
		}, "source_id is not a label of"},
		{"legend names a label the aggregation drops", fams, func(d map[string]any) {
			firstTarget(panelByTitle(d, "Requests by outcome"))["legendFormat"] = "{{outcome}} {{instance}}"
		}, "{{instance}}, which the query's result does not have"},
		{"label value named nowhere", fams, func(d map[string]any) {
			firstTarget(panelByTitle(d, "Requests by outcome"))["expr"] = `sum by (outcome) (rate(caddy_ai_gateway_auth_requests_total{outcome="no_credentials"}[5m]))`
		}, `outcome="no_credentials"`},
		{"a metric the module does not export", fams, func(d map[string]any) {
			firstTarget(panelByTitle(d, "Limit refusals"))["expr"] = "sum by (limit) (increase(caddy_ai_gateway_auth_limit_refusal_total[5m]))"
		}, "not a metric the module exports"},
		{"old table: two unjoined frames", fams, func(d map[string]any) {
			delete(table(d), "transformations")
		}, "shows 2 separate tables"},
		{"cost without a currency", fams, func(d map[string]any) {
			fc := table(d)["fieldConfig"].(map[string]any)
			fc["overrides"] = fc["overrides"].([]any)[:1]
		}, "cost: unit is \"\", want currencyUSD"},
		{"override on a column that is renamed", fams, func(d map[string]any) {
			o := table(d)["fieldConfig"].(map[string]any)["overrides"].([]any)[1].(map[string]any)
			o["matcher"].(map[string]any)["options"] = "Value #B"
		}, `no column "Value #B"`},
		{"misspelled target key", fams, func(d map[string]any) {
			tg := firstTarget(panelByTitle(d, "Requests per client"))
			tg["legendformat"] = tg["legendFormat"]
			delete(tg, "legendFormat")
		}, "unknown key legendformat"},
		{"unknown unit", fams, func(d map[string]any) {
			expiry(d)["fieldConfig"].(map[string]any)["defaults"].(map[string]any)["unit"] = "seconds"
		}, `unit "seconds"`},
		{"unknown transformation", fams, func(d map[string]any) {
			table(d)["transformations"].([]any)[0].(map[string]any)["id"] = "merg"
		}, `transformation "merg"`},
		{"enum value", fams, func(d map[string]any) {
			expiry(d)["options"].(map[string]any)["legend"].(map[string]any)["displayMode"] = "tabel"
		}, `options.legend.displayMode "tabel"`},
		{"gridPos without h", fams, func(d map[string]any) {
			delete(expiry(d)["gridPos"].(map[string]any), "h")
		}, "gridPos lacks h"},
		{"overlapping panels", fams, func(d map[string]any) {
			expiry(d)["gridPos"].(map[string]any)["w"] = 13.0
		}, "overlaps"},
		{"undeclared datasource variable", fams, func(d map[string]any) {
			firstTarget(expiry(d))["datasource"] = map[string]any{"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
		}, "datasource"},
		{"pluginVersion of another Grafana", fams, func(d map[string]any) {
			expiry(d)["pluginVersion"] = "11.6.0"
		}, "pluginVersion"},
		{"a panel the operators asked for is gone", fams, func(d map[string]any) {
			panels := d["panels"].([]any)
			d["panels"] = slices.DeleteFunc(slices.Clone(panels), func(p any) bool {
				return strings.HasPrefix(p.(map[string]any)["title"].(string), "Limit refusals")
			})
		}, "no panel shows caddy_ai_gateway_auth_limit_refusals_total"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d map[string]any
			if err := json.Unmarshal(raw, &d); err != nil {
				t.Fatal(err)
			}
			c.alter(d)
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			problems := checkDashboard(b, c.fams)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Errorf("no problem names %q; problems: %q", c.want, problems)
			}
		})
	}
}

// TestGrafanaSchema type-checks the dashboard against Grafana's published
// dashboard types (@grafana/schema at the version the dashboard names) with
// the TypeScript project in grafana/check, then shows that the same check
// fails on broken copies. It needs that project's node_modules; the test
// does not install them (tests may not reach a registry).
func TestGrafanaSchema(t *testing.T) {
	tsc, err := filepath.Abs(filepath.Join(checkDir, "node_modules", ".bin", "tsc"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tsc); err != nil {
		t.Skipf("no TypeScript in %s/node_modules: `npm ci --prefix examples/grafana/check` installs it (and @grafana/schema) from package-lock.json", checkDir)
	}
	var dash struct {
		SchemaVersion int `json:"schemaVersion"`
	}
	decodeJSON(t, dashboardPath, &dash)
	grafana := requiredGrafana(t, readFile(t, dashboardPath))
	var installed struct {
		Version string `json:"version"`
	}
	decodeJSON(t, checkDir+"/node_modules/@grafana/schema/package.json", &installed)
	if installed.Version != grafana {
		t.Fatalf("%s/node_modules has @grafana/schema %s, the dashboard names Grafana %s: run `npm ci --prefix examples/grafana/check`", checkDir, installed.Version, grafana)
	}
	// The schemaVersion that this Grafana writes: the default of its
	// dashboard schema.
	gen := string(readFile(t, checkDir+"/node_modules/@grafana/schema/dist/esm/raw/dashboard/x/types.gen.mjs"))
	m := regexp.MustCompile(`\bschemaVersion:\s*(\d+)`).FindStringSubmatch(gen)
	if m == nil {
		t.Fatal("@grafana/schema's types.gen.mjs has no default schemaVersion")
	}
	if want, _ := strconv.Atoi(m[1]); dash.SchemaVersion != want {
		t.Errorf("schemaVersion is %d; Grafana %s writes %d", dash.SchemaVersion, grafana, want)
	}

	if out, err := runTSC(t, tsc, checkDir); err != nil {
		t.Fatalf("the dashboard does not fit Grafana %s's dashboard schema: %v\n%s", grafana, err, out)
	}

	// The same check.ts and compiler options, in one project in a temporary
	// directory, against altered copies of the dashboard: each copy must
	// make tsc report an error in its own file, and an unaltered copy none.
	check := string(readFile(t, checkDir+"/check.ts"))
	const importPath = `"../ai-gateway-auth-dashboard.json"`
	if strings.Count(check, importPath) != 1 {
		t.Fatalf("check.ts no longer imports %s once; update this test", importPath)
	}
	var tsconfig map[string]any
	decodeJSON(t, checkDir+"/tsconfig.json", &tsconfig)
	tmp := t.TempDir()
	nm, _ := filepath.Abs(filepath.Join(checkDir, "node_modules"))
	if err := os.Symlink(nm, filepath.Join(tmp, "node_modules")); err != nil {
		t.Fatal(err)
	}
	raw := readFile(t, dashboardPath)
	cases := []struct {
		name  string
		alter func(d map[string]any)
	}{
		{"unaltered", func(map[string]any) {}},
		{"gridpos_without_h", func(d map[string]any) { delete(panel0(d)["gridPos"].(map[string]any), "h") }},
		{"title_a_number", func(d map[string]any) { panel0(d)["title"] = 7 }},
		{"misspelled_gridPos", func(d map[string]any) { p := panel0(d); p["gridpos"] = p["gridPos"]; delete(p, "gridPos") }},
		{"misspelled_showLegend", func(d map[string]any) {
			l := panel0(d)["options"].(map[string]any)["legend"].(map[string]any)
			l["showLegnd"] = l["showLegend"]
			delete(l, "showLegend")
		}},
		{"fieldConfig_default", func(d map[string]any) {
			fc := panel0(d)["fieldConfig"].(map[string]any)
			fc["default"] = fc["defaults"]
			delete(fc, "defaults")
		}},
		{"schemaVersion_a_string", func(d map[string]any) { d["schemaVersion"] = "42" }},
		{"transformation_without_options", func(d map[string]any) {
			for _, p := range d["panels"].([]any) {
				if tr, ok := p.(map[string]any)["transformations"].([]any); ok {
					delete(tr[0].(map[string]any), "options")
				}
			}
		}},
		{"variable_current_without_text", func(d map[string]any) {
			d["templating"].(map[string]any)["list"].([]any)[0].(map[string]any)["current"] = map[string]any{}
		}},
		{"unknown_top_level_key", func(d map[string]any) { d["refrsh"] = d["refresh"]; delete(d, "refresh") }},
	}
	var files []string
	for _, c := range cases {
		var d map[string]any
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		c.alter(d)
		b, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(tmp, c.name+".json"), string(b))
		writeFile(t, filepath.Join(tmp, c.name+".ts"), strings.Replace(check, importPath, `"./`+c.name+`.json"`, 1))
		files = append(files, c.name+".ts")
	}
	tsconfig["files"] = files
	b, _ := json.Marshal(tsconfig)
	writeFile(t, filepath.Join(tmp, "tsconfig.json"), string(b))
	out, err := runTSC(t, tsc, tmp)
	if err == nil {
		t.Fatalf("tsc passed every altered copy:\n%s", out)
	}
	for _, c := range cases {
		reported := regexp.MustCompile(`(?m)(^|/)` + regexp.QuoteMeta(c.name) + `\.ts\(\d+,\d+\): error TS`).MatchString(out)
		if c.name == "unaltered" && reported {
			t.Errorf("tsc reports an error in the unaltered copy:\n%s", out)
		} else if c.name != "unaltered" && !reported {
			t.Errorf("tsc does not catch %s", c.name)
		}
	}
	if t.Failed() {
		t.Logf("tsc output:\n%s", out)
	}
}

func panel0(d map[string]any) map[string]any { return d["panels"].([]any)[0].(map[string]any) }

func runTSC(t *testing.T, tsc, project string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, tsc, "-p", project, "--pretty", "false").CombinedOutput()
	return string(out), err
}

// requiredGrafana is the Grafana version the dashboard's __requires names.
func requiredGrafana(t *testing.T, raw []byte) string {
	t.Helper()
	var d struct {
		Requires []struct{ Type, ID, Version string } `json:"__requires"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	for _, r := range d.Requires {
		if r.Type == "grafana" && r.ID == "grafana" {
			return r.Version
		}
	}
	t.Fatal("the dashboard's __requires names no Grafana version")
	return ""
}

// checkVersions: the dashboard names one Grafana version, and the check
// project pins @grafana/schema to exactly that version, and TypeScript to
// an exact version, in package.json and package-lock.json alike.
func checkVersions(dashboard, packageJSON, lock []byte) (problems []string) {
	var d struct {
		Requires []struct{ Type, ID, Name, Version string } `json:"__requires"`
	}
	var pkg struct {
		DevDependencies map[string]string `json:"devDependencies"`
	}
	var lk struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	for _, x := range []struct {
		b []byte
		v any
	}{{dashboard, &d}, {packageJSON, &pkg}, {lock, &lk}} {
		if err := json.Unmarshal(x.b, x.v); err != nil {
			return []string{err.Error()}
		}
	}
	grafana := ""
	for _, r := range d.Requires {
		if r.Type == "grafana" {
			grafana = r.Version
			if r.ID != "grafana" || r.Name != "Grafana" {
				problems = append(problems, fmt.Sprintf("__requires: the grafana entry is %+v, want id grafana, name Grafana", r))
			}
		}
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(grafana) {
		return append(problems, fmt.Sprintf("__requires names Grafana version %q, want x.y.z", grafana))
	}
	if v := pkg.DevDependencies["@grafana/schema"]; v != grafana {
		problems = append(problems, fmt.Sprintf("%s/package.json pins @grafana/schema %q, the dashboard names Grafana %s", checkDir, v, grafana))
	}
	if v := lk.Packages["node_modules/@grafana/schema"].Version; v != grafana {
		problems = append(problems, fmt.Sprintf("%s/package-lock.json has @grafana/schema %q, the dashboard names Grafana %s", checkDir, v, grafana))
	}
	ts := pkg.DevDependencies["typescript"]
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(ts) {
		problems = append(problems, fmt.Sprintf("%s/package.json: typescript %q is not an exact version", checkDir, ts))
	} else if v := lk.Packages["node_modules/typescript"].Version; v != ts {
		problems = append(problems, fmt.Sprintf("%s/package-lock.json has typescript %q, package.json pins %s", checkDir, v, ts))
	}
	return problems
}

// Grafana's names that the dashboard may use. Each list holds the ids of
// Grafana 12's registries that this dashboard needs, or could plausibly
// need; a new one is added here after checking it against Grafana's
// source (packages/grafana-data: valueFormats/categories.ts,
// transformations/transformers/ids.ts, transformations/matchers/ids.ts,
// and @grafana/schema's common enums). They catch misspellings that
// Grafana would silently ignore.
var (
	// Units (valueFormats/categories.ts ids).
	knownUnits = []string{"none", "short", "locale", "s", "ms", "reqps", "ops", "cps", "percent", "percentunit", "bytes", "currencyUSD"}
	// Units for a count of tokens.
	countUnits = []string{"none", "short", "locale"}
	// Transformation ids (DataTransformerID).
	knownTransformations = []string{"merge", "joinByField", "seriesToColumns", "organize", "rename", "renameByRegex", "sortBy", "filterFieldsByName", "filterByRefId", "filterByValue", "reduce", "calculateField", "labelsToFields", "groupBy", "concatenate", "convertFieldType", "seriesToRows", "limit"}
	// Field matcher ids (FieldMatcherID).
	knownFieldMatchers = []string{"byName", "byNames", "byRegexp", "byRegexpOrNames", "byType", "byFrameRefID", "byValue", "numeric", "time", "first", "firstTimeField"}
	// Field config properties an override may set.
	knownOverrideProperties = []string{"unit", "decimals", "displayName", "min", "max", "color", "thresholds", "mappings", "links", "noValue", "custom.width", "custom.align", "custom.hidden", "custom.cellOptions", "custom.hideFrom"}
	// Keys of a Prometheus query (the Prometheus data source's query model).
	knownTargetKeys = []string{"refId", "datasource", "expr", "legendFormat", "format", "instant", "range", "interval", "intervalFactor", "exemplar", "editorMode", "hide", "queryType"}
	// Keys of the organize transformation's options.
	knownOrganizeKeys = []string{"excludeByName", "includeByName", "indexByName", "renameByName"}
	// Values of enums that the dashboard sets, by path ([] for any element):
	// @grafana/schema 12.4.11's LegendDisplayMode, LegendPlacement,
	// TooltipDisplayMode, SortOrder, TableCellHeight, ThresholdsMode,
	// GraphThresholdsStyleMode, FieldTextAlignment, TableCellDisplayMode,
	// VariableType, and the Prometheus query's format.
	knownEnumValues = map[string][]string{
		"panels[].options.legend.displayMode":                       {"list", "table", "hidden"},
		"panels[].options.legend.placement":                         {"bottom", "right"},
		"panels[].options.tooltip.mode":                             {"single", "multi", "none"},
		"panels[].options.tooltip.sort":                             {"none", "asc", "desc"},
		"panels[].options.cellHeight":                               {"sm", "md", "lg", "auto"},
		"panels[].fieldConfig.defaults.thresholds.mode":             {"absolute", "percentage"},
		"panels[].fieldConfig.defaults.custom.thresholdsStyle.mode": {"off", "line", "dashed", "area", "line+area", "dashed+area", "series"},
		"panels[].fieldConfig.defaults.custom.align":                {"auto", "left", "right", "center"},
		"panels[].fieldConfig.defaults.custom.cellOptions.type":     {"auto", "actions", "basic", "color-background", "color-background-solid", "color-text", "custom", "data-links", "gauge", "geo", "gradient-gauge", "image", "json-view", "lcd-gauge", "markdown", "pill", "sparkline"},
		"panels[].targets[].format":                                 {"time_series", "table", "heatmap"},
		"templating.list[].type":                                    {"query", "adhoc", "groupby", "constant", "datasource", "interval", "textbox", "custom", "system", "snapshot", "switch"},
	}
	// The dashboard's metrics that the operators asked to see.
	wantedMetrics = []string{
		"caddy_ai_gateway_auth_credential_expiry_seconds", "caddy_ai_gateway_auth_credential_refreshes_total",
		"caddy_ai_gateway_auth_requests_total", "caddy_ai_gateway_auth_client_tokens_total",
		"caddy_ai_gateway_auth_client_requests_total", "caddy_ai_gateway_auth_limit_refusals_total",
		"caddy_ai_gateway_auth_client_cost_total",
	}
)

// Dashboard, as far as the checks read it.
type (
	grafanaDashboard struct {
		Requires []struct {
			Type, ID, Version string
		} `json:"__requires"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []grafanaPanel `json:"panels"`
	}
	grafanaPanel struct {
		ID            int               `json:"id"`
		Title         string            `json:"title"`
		Type          string            `json:"type"`
		PluginVersion string            `json:"pluginVersion"`
		Datasource    *datasourceRef    `json:"datasource"`
		GridPos       map[string]*int   `json:"gridPos"`
		FieldConfig   fieldConfigSource `json:"fieldConfig"`
		Options       struct {
			SortBy []struct {
				DisplayName string `json:"displayName"`
			} `json:"sortBy"`
		} `json:"options"`
		Targets         []map[string]any `json:"targets"`
		Transformations []struct {
			ID      string          `json:"id"`
			Options json.RawMessage `json:"options"`
		} `json:"transformations"`
	}
	datasourceRef struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	fieldConfigSource struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options any    `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string `json:"id"`
				Value any    `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	}
	promTarget struct {
		RefID        string         `json:"refId"`
		Datasource   *datasourceRef `json:"datasource"`
		Expr         string         `json:"expr"`
		LegendFormat string         `json:"legendFormat"`
		Format       string         `json:"format"`
	}
)

// checkDashboard returns what is wrong with the dashboard JSON, given the
// metric families the module exports.
func checkDashboard(raw []byte, fams families) (problems []string) {
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return []string{dashboardPath + ": " + err.Error()}
	}
	var tree any
	json.Unmarshal(raw, &tree)
	if len(d.Panels) < 6 {
		add("%d panels", len(d.Panels))
	}

	grafana := ""
	requiredPanels := map[string]bool{}
	for _, r := range d.Requires {
		switch r.Type {
		case "grafana":
			grafana = r.Version
		case "panel":
			requiredPanels[r.ID] = true
		}
	}
	dsVars := map[string]bool{}
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			dsVars["${"+v.Name+"}"] = true
		}
	}
	checkDS := func(where string, ds *datasourceRef) {
		if ds == nil || ds.Type != "prometheus" || !dsVars[ds.UID] {
			add("%s: datasource %+v is not a Prometheus datasource variable of the dashboard (%v)", where, ds, slices.Sorted(maps.Keys(dsVars)))
		}
	}

	// Enum values, wherever the dashboard sets one.
	walkJSON(tree, "", func(path string, v any) {
		allowed, ok := knownEnumValues[path]
		if s, isString := v.(string); ok && allowed != nil && isString && !slices.Contains(allowed, s) {
			add("%s %q is not one of Grafana's %v", path, s, allowed)
		}
	})

	used := map[string]bool{}
	ids := map[int]bool{}
	type rect struct {
		title      string
		x, y, w, h int
	}
	var rects []rect
	for _, p := range d.Panels {
		where := fmt.Sprintf("panel %q", p.Title)
		if p.ID <= 0 || ids[p.ID] {
			add("%s: id %d is not a new positive number", where, p.ID)
		}
		ids[p.ID] = true
		if !requiredPanels[p.Type] {
			add("%s: type %q is not a panel the dashboard's __requires lists", where, p.Type)
		}
		if p.PluginVersion != grafana {
			add("%s: pluginVersion %q is not the Grafana version the dashboard names (%s)", where, p.PluginVersion, grafana)
		}
		checkDS(where, p.Datasource)
		var r rect
		for _, k := range []struct {
			name string
			v    *int
		}{{"x", &r.x}, {"y", &r.y}, {"w", &r.w}, {"h", &r.h}} {
			if n := p.GridPos[k.name]; n == nil {
				add("%s: gridPos lacks %s", where, k.name)
			} else {
				*k.v = *n
			}
		}
		if r.w < 1 || r.h < 1 || r.x < 0 || r.y < 0 || r.x+r.w > 24 {
			add("%s: gridPos %+v is not inside the 24-column grid", where, r)
		}
		r.title = p.Title
		for _, o := range rects {
			if r.x < o.x+o.w && o.x < r.x+r.w && r.y < o.y+o.h && o.y < r.y+r.h {
				add("%s overlaps panel %q", where, o.title)
			}
		}
		rects = append(rects, r)

		// Units, transformations, overrides: names Grafana knows.
		units := []string{p.FieldConfig.Defaults.Unit}
		for _, o := range p.FieldConfig.Overrides {
			if !slices.Contains(knownFieldMatchers, o.Matcher.ID) {
				add("%s: field matcher %q is not one of %v", where, o.Matcher.ID, knownFieldMatchers)
			}
			for _, prop := range o.Properties {
				if !slices.Contains(knownOverrideProperties, prop.ID) {
					add("%s: override property %q is not one of %v", where, prop.ID, knownOverrideProperties)
				}
				if prop.ID == "unit" {
					s, _ := prop.Value.(string)
					units = append(units, s)
				}
			}
		}
		for _, u := range units {
			if u != "" && !slices.Contains(knownUnits, u) {
				add("%s: unit %q is not one of %v", where, u, knownUnits)
			}
		}
		for _, tr := range p.Transformations {
			if !slices.Contains(knownTransformations, tr.ID) {
				add("%s: transformation %q is not one of %v", where, tr.ID, knownTransformations)
			}
			if tr.ID == "organize" {
				var opts map[string]any
				json.Unmarshal(tr.Options, &opts)
				for k := range opts {
					if !slices.Contains(knownOrganizeKeys, k) {
						add("%s: organize has unknown option %s", where, k)
					}
				}
			}
		}

		// Queries.
		if len(p.Targets) == 0 {
			add("%s has no query", where)
		}
		var targets []promTarget
		refIDs := map[string]bool{}
		for i, raw := range p.Targets {
			var q promTarget
			b, _ := json.Marshal(raw)
			json.Unmarshal(b, &q)
			targets = append(targets, q)
			qwhere := fmt.Sprintf("%s query %q", where, q.RefID)
			for k := range raw {
				if !slices.Contains(knownTargetKeys, k) {
					add("%s: unknown key %s (a Prometheus query has %v)", qwhere, k, knownTargetKeys)
				}
			}
			if q.RefID == "" || refIDs[q.RefID] {
				add("%s: query %d has no refId of its own", where, i)
			}
			refIDs[q.RefID] = true
			checkDS(qwhere, q.Datasource)
			metrics, pr := checkQuery(q.Expr, fams)
			for _, s := range pr {
				add("%s: %s", qwhere, s)
			}
			for _, m := range metrics {
				used[m] = true
			}
			if q.Format != "table" {
				for _, s := range checkLegend(q.Expr, q.LegendFormat, fams) {
					add("%s: %s", qwhere, s)
				}
			}
			if strings.Contains(q.Expr, "_cost_") && p.Type != "table" && p.FieldConfig.Defaults.Unit != "currencyUSD" {
				add("%s shows a cost with unit %q, want currencyUSD", where, p.FieldConfig.Defaults.Unit)
			}
		}
		if p.Type == "table" {
			for _, s := range checkTable(p, targets, fams) {
				add("%s: %s", where, s)
			}
		}
	}
	for _, m := range wantedMetrics {
		if !used[m] {
			add("no panel shows %s", m)
		}
	}
	return problems
}

// walkJSON calls f for every value of a decoded JSON tree, with its path
// (object keys joined by dots, [] for an array element).
func walkJSON(v any, path string, f func(path string, v any)) {
	f(path, v)
	switch v := v.(type) {
	case map[string]any:
		for k, c := range v {
			p := k
			if path != "" {
				p = path + "." + k
			}
			walkJSON(c, p, f)
		}
	case []any:
		for _, c := range v {
			walkJSON(c, path+"[]", f)
		}
	}
}

// checkTable: the table's queries end in one table, one row per label set,
// with every column named and the units of tokens and cost. Grafana turns
// each instant query formatted as a table into a frame with the columns
// Time, the query's labels and "Value #<refId>" (plain "Value" when the
// panel has a single query).
func checkTable(p grafanaPanel, targets []promTarget, fams families) (problems []string) {
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var ids []string
	for _, tr := range p.Transformations {
		ids = append(ids, tr.ID)
	}
	if len(targets) > 1 && !slices.ContainsFunc(ids, func(id string) bool {
		return id == "merge" || id == "joinByField" || id == "seriesToColumns"
	}) {
		add("shows %d separate tables: its queries are not joined (merge or joinByField)", len(targets))
	}
	columns := map[string]string{"Time": ""} // column -> the metric of its values
	valueColumn := map[string]string{}       // refId -> column
	for _, q := range targets {
		if q.Format != "table" {
			add("query %q is not formatted as a table", q.RefID)
		}
		labels, _ := resultLabels(q.Expr, fams)
		for _, l := range labels {
			columns[l] = ""
		}
		col := "Value"
		if len(targets) > 1 {
			col = "Value #" + q.RefID
		}
		metrics := moduleMetricRE.FindAllString(q.Expr, -1)
		columns[col] = strings.Join(metrics, " ")
		valueColumn[q.RefID] = col
	}
	for _, tr := range p.Transformations {
		if tr.ID != "organize" {
			continue
		}
		var o struct {
			ExcludeByName map[string]bool   `json:"excludeByName"`
			RenameByName  map[string]string `json:"renameByName"`
		}
		json.Unmarshal(tr.Options, &o)
		for c, ex := range o.ExcludeByName {
			if ex {
				delete(columns, c)
			}
		}
		for from, to := range o.RenameByName {
			if m, ok := columns[from]; ok && to != "" {
				delete(columns, from)
				columns[to] = m
			}
		}
	}
	for c := range columns {
		if c == "Time" || strings.HasPrefix(c, "Value") {
			add("column %q is left as Grafana names it: hide it or rename it (organize)", c)
		}
	}
	units := map[string]string{}
	for _, o := range p.FieldConfig.Overrides {
		name, _ := o.Matcher.Options.(string)
		if o.Matcher.ID != "byName" {
			continue
		}
		if _, ok := columns[name]; !ok {
			add("an override matches no column %q (the columns are %v)", name, slices.Sorted(maps.Keys(columns)))
		}
		for _, prop := range o.Properties {
			if prop.ID == "unit" {
				units[name], _ = prop.Value.(string)
			}
		}
	}
	for _, s := range p.Options.SortBy {
		if _, ok := columns[s.DisplayName]; !ok {
			add("sorted by no column %q", s.DisplayName)
		}
	}
	for c, metric := range columns {
		unit, ok := units[c]
		if !ok {
			unit = p.FieldConfig.Defaults.Unit
		}
		switch {
		case strings.Contains(metric, "_cost_") && unit != "currencyUSD":
			add("column %s: unit is %q, want currencyUSD (AI Gateway reports cost in USD)", c, unit)
		case strings.Contains(metric, "_tokens_") && !slices.Contains(countUnits, unit):
			add("column %s: unit is %q, want a count (%v)", c, unit, countUnits)
		}
	}
	return problems
}

// PromQL, as far as the dashboard and the alerts use it. The test reads
// label names from grouping clauses, selectors and legends, and follows
// labels through the shapes the dashboard uses: a metric, functions of it,
// comparisons with a number, and aggregations written `agg by (...) (...)`.
// A query outside that is reported, not guessed at.
var (
	moduleMetricRE = regexp.MustCompile(`caddy_ai_gateway_auth_[a-zA-Z0-9_]+`)
	grafanaVarRE   = regexp.MustCompile(`\$\{[^}]*\}`)
	groupingRE     = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)`)
	resultGroupRE  = regexp.MustCompile(`\b(by|without)\s*\(([^()]*)\)`)
	selectorRE     = regexp.MustCompile(`\{([^{}]*)\}`)
	matcherRE      = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	templateRE     = regexp.MustCompile(`\{\{\s*([^{}]*?)\s*\}\}`)
	labelNameRE    = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	unfollowedRE   = regexp.MustCompile(`\b(label_replace|label_join|count_values|absent|absent_over_time|vector|on|ignoring|group_left|group_right)\s*\(|\b(topk|bottomk|limitk|limit_ratio|quantile)\s+(by|without)\b|\)\s*(by|without)\s*\(`)
)

// checkQuery returns the module's metrics a query names and what is wrong
// with it: a metric the module does not export, a label that none of the
// query's metrics has after a default scrape, a label value that /metrics
// and the metric's help name nowhere.
func checkQuery(expr string, fams families) (metrics []string, problems []string) {
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	expr = grafanaVarRE.ReplaceAllString(expr, "$$v")
	metrics = moduleMetricRE.FindAllString(expr, -1)
	if len(metrics) == 0 {
		add("%q names no metric of the module", expr)
	}
	var known []*family
	for _, m := range metrics {
		f := fams.lookup(m)
		if f == nil {
			add("%s is not a metric the module exports (it exports %v)", m, slices.Sorted(maps.Keys(fams)))
			continue
		}
		known = append(known, f)
		for _, l := range scrapeLabels {
			if f.labels[l] {
				add("%s has a label %s of its own: a default Prometheus scrape (honor_labels: false) renames it exported_%s and sets %s to the scrape target's", m, l, l, l)
			}
		}
	}
	if len(known) == 0 {
		return metrics, problems
	}
	if m := unfollowedRE.FindString(expr); m != "" {
		add("%q: the test cannot follow labels through %q; extend it", expr, m)
	}
	has := func(l string) bool {
		return slices.Contains(scrapeLabels, l) || slices.ContainsFunc(known, func(f *family) bool { return f.labels[l] && !slices.Contains(scrapeLabels, l) })
	}
	check := func(l string) {
		if !labelNameRE.MatchString(l) {
			add("%q: cannot read label %q", expr, l)
		} else if !has(l) {
			add("%s is not a label of %s after a default scrape (it has %v)", l, strings.Join(metrics, ", "), scrapedLabels(known))
		}
	}
	for _, g := range groupingRE.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(g[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				check(l)
			}
		}
	}
	for _, s := range selectorRE.FindAllStringSubmatch(expr, -1) {
		if strings.Trim(matcherRE.ReplaceAllString(s[1], ""), ", \t\n") != "" {
			add("%q: cannot read the selector {%s}", expr, s[1])
		}
		for _, m := range matcherRE.FindAllStringSubmatch(s[1], -1) {
			check(m[1])
			if m[2] == "=" && has(m[1]) && !slices.Contains(scrapeLabels, m[1]) &&
				!slices.ContainsFunc(known, func(f *family) bool { return f.values[m[1]][m[3]] || f.names(m[3]) }) {
				add("%s=%q: no series on /metrics has that value and no metric's help names it", m[1], m[3])
			}
		}
	}
	return metrics, problems
}

// resultLabels returns the labels of the series a query returns: those of
// its outermost aggregation (the first by or without), or else those of
// its metrics after a default scrape.
func resultLabels(expr string, fams families) ([]string, bool) {
	var all []string
	for _, m := range moduleMetricRE.FindAllString(expr, -1) {
		f := fams.lookup(m)
		if f == nil {
			return nil, false
		}
		all = append(all, scrapedLabels([]*family{f})...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	g := resultGroupRE.FindStringSubmatch(expr)
	if g == nil {
		return all, true
	}
	var listed []string
	for l := range strings.SplitSeq(g[2], ",") {
		if l = strings.TrimSpace(l); l != "" {
			listed = append(listed, l)
		}
	}
	if g[1] == "by" {
		return listed, true
	}
	return slices.DeleteFunc(all, func(l string) bool { return slices.Contains(listed, l) }), true
}

// checkLegend: a legend names only labels the query's result has, and
// every label of the module that the result keeps, so that no two series
// get the same name; instance and job, the scrape's, may be left out.
func checkLegend(expr, legend string, fams families) (problems []string) {
	if legend == "" || legend == "__auto" {
		return nil // Grafana names each series with all its labels
	}
	result, ok := resultLabels(expr, fams)
	if !ok {
		return nil // checkQuery reports the unknown metric
	}
	named := map[string]bool{}
	for _, m := range templateRE.FindAllStringSubmatch(legend, -1) {
		named[m[1]] = true
		if !slices.Contains(result, m[1]) {
			problems = append(problems, fmt.Sprintf("the legend names {{%s}}, which the query's result does not have (it has %v)", m[1], result))
		}
	}
	for _, l := range result {
		if !named[l] && !slices.Contains(scrapeLabels, l) && l != "le" {
			problems = append(problems, fmt.Sprintf("the legend %q does not name %s: series that differ only in it get the same name", legend, l))
		}
	}
	return problems
}

// scrapedLabels are the labels the families' series have in Prometheus
// after a default scrape: their own, less those the scrape owns, plus the
// scrape's.
func scrapedLabels(fs []*family) []string {
	var out []string
	for _, f := range fs {
		for l := range f.labels {
			if !slices.Contains(scrapeLabels, l) {
				out = append(out, l)
			}
		}
	}
	out = append(out, scrapeLabels...)
	slices.Sort(out)
	return slices.Compact(out)
}

// checkAlerts: the rules file is Prometheus rule YAML whose expressions
// name only exported metrics and labels, whose annotations name only
// labels the expression's result has, and which has the alerts the docs
// recommend.
func checkAlerts(raw []byte, fams families) (problems []string) {
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		return []string{err.Error()}
	}
	var exprs []string
	for _, g := range rules.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			add("group %q has no name or no rule", g.Name)
		}
		for _, r := range g.Rules {
			where := fmt.Sprintf("alert %q", r.Alert)
			if !regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`).MatchString(r.Alert) {
				add("%s: not a valid alert name", where)
			}
			if r.For != "" && !regexp.MustCompile(`^(\d+(ms|s|m|h|d|w|y))+$`).MatchString(r.For) {
				add("%s: for %q is not a Prometheus duration", where, r.For)
			}
			if r.Labels["severity"] == "" {
				add("%s has no severity label", where)
			}
			_, pr := checkQuery(r.Expr, fams)
			for _, s := range pr {
				add("%s: %s", where, s)
			}
			result, _ := resultLabels(r.Expr, fams)
			for k, text := range r.Annotations {
				for _, m := range templateRE.FindAllStringSubmatch(text, -1) {
					for _, l := range regexp.MustCompile(`\$labels\.([a-zA-Z0-9_]+)`).FindAllStringSubmatch(m[1], -1) {
						if !slices.Contains(result, l[1]) {
							add("%s: annotation %s names $labels.%s, which the expression's result does not have (it has %v)", where, k, l[1], result)
						}
					}
				}
			}
			exprs = append(exprs, r.Expr)
		}
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`^caddy_ai_gateway_auth_credential_expiry_seconds < \d+$`),
		regexp.MustCompile(`caddy_ai_gateway_auth_requests_total\{outcome="no_credential"\}`),
		regexp.MustCompile(`caddy_ai_gateway_auth_credential_refreshes_total\{result="failure"\}`),
	} {
		if !slices.ContainsFunc(exprs, want.MatchString) {
			add("no rule's expression matches %s", want)
		}
	}
	return problems
}

// checkPromConfig: the scrape config scrapes /metrics with the default
// honor_labels (which the label checks assume) and loads the alerts.
func checkPromConfig(raw []byte) (problems []string) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName     string `yaml:"job_name"`
			MetricsPath string `yaml:"metrics_path"`
			HonorLabels *bool  `yaml:"honor_labels"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return []string{err.Error()}
	}
	if len(cfg.ScrapeConfigs) == 0 {
		problems = append(problems, "no scrape config")
	}
	for _, s := range cfg.ScrapeConfigs {
		if s.MetricsPath != "/metrics" {
			problems = append(problems, fmt.Sprintf("job %s does not scrape /metrics", s.JobName))
		}
		if s.HonorLabels != nil && *s.HonorLabels {
			problems = append(problems, fmt.Sprintf("job %s sets honor_labels: true; the dashboard assumes the default", s.JobName))
		}
	}
	if !slices.Contains(cfg.RuleFiles, filepath.Base(alertsPath)) {
		problems = append(problems, fmt.Sprintf("rule_files does not load %s", filepath.Base(alertsPath)))
	}
	return problems
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A metric family on /metrics: its label names, the values seen for each,
// and its help text.
type family struct {
	labels map[string]bool
	values map[string]map[string]bool
	help   string
}

// names reports whether the help text names a value as a word.
func (f *family) names(value string) bool {
	return regexp.MustCompile(`(^|[^a-zA-Z0-9_])` + regexp.QuoteMeta(value) + `($|[^a-zA-Z0-9_])`).MatchString(f.help)
}

type families map[string]*family

// lookup finds a family by a series name (a histogram's _bucket, _sum and
// _count series belong to it).
func (fs families) lookup(name string) *family {
	if f := fs[name]; f != nil {
		return f
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && fs[base] != nil {
			return fs[base]
		}
	}
	return nil
}

// exportedMetrics runs Caddy with the module in this process, sends it a
// metered request, one over a limit and one with a wrong key, and returns
// the module's metric families on its admin /metrics, with the labels of
// their series.
func exportedMetrics(t *testing.T) families {
	tmp := t.TempDir()
	t.Setenv("HOME", tmp)
	t.Setenv("XDG_DATA_HOME", filepath.Join(tmp, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(tmp, "config"))
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"cost":0.001}}`)
	}))
	defer upstream.Close()
	vercel := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"token": fakeJWT(t, time.Hour)})
	}))
	defer vercel.Close()
	admin, site := freeAddr(t), freeAddr(t)
	cf := fmt.Sprintf(`{
	admin %s
	persist_config off
}
http://%s {
	bind 127.0.0.1
	ai_gateway_auth {
		credential vercel_oidc {
			mint {
				project      prj_example
				team         team_example
				access_token dummy-vercel-access-token
				api          %s
			}
		}
		client_key sk-placeholder
		limits {
			requests_per_minute 1
		}
		usage_metrics
	}
	reverse_proxy %s
}
`, admin, site, vercel.URL, upstream.URL)
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "dashboard-test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		t.Fatal(err)
	}
	defer caddy.Stop()
	for _, key := range []string{"sk-placeholder", "sk-placeholder", "sk-wrong"} { // forwarded, limited, rejected
		req, _ := http.NewRequest(http.MethodPost, "http://"+site+"/v1/chat/completions", strings.NewReader(`{"model":"openai/gpt-5"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fams := families{}
	const prefix = "caddy_ai_gateway_auth_"
	sampleRE := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+`)
	labelRE := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && strings.HasPrefix(f[2], prefix) {
			fam := fams[f[2]]
			if fam == nil {
				fam = &family{labels: map[string]bool{}, values: map[string]map[string]bool{}}
				fams[f[2]] = fam
			}
			if f[1] == "HELP" {
				fam.help = strings.Join(f[3:], " ")
			}
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil || !strings.HasPrefix(m[1], prefix) {
			continue
		}
		fam := fams.lookup(m[1])
		if fam == nil {
			t.Fatalf("/metrics: series %s of no family", m[1])
		}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			fam.labels[l[1]] = true
			if fam.values[l[1]] == nil {
				fam.values[l[1]] = map[string]bool{}
			}
			fam.values[l[1]][l[2]] = true
		}
	}
	if len(fams) == 0 {
		t.Fatalf("no caddy_ai_gateway_auth_ metric on /metrics")
	}
	return fams
}
