package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The krew manifest names the plugin as kubectl expects (binary
// kubectl-cutover, plugin cutover) and has one archive per platform that
// `make plugin-dist` builds, each with the placeholder it fills in and the
// binary and LICENSE it packs.
func TestKrewManifest(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "hack", "krew", "cutover.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Version          string `json:"version"`
			ShortDescription string `json:"shortDescription"`
			Platforms        []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				URI    string `json:"uri"`
				SHA256 string `json:"sha256"`
				Bin    string `json:"bin"`
				Files  []struct {
					From string `json:"from"`
				} `json:"files"`
			} `json:"platforms"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" || m.Metadata.Name != "cutover" || m.Spec.Version != "${VERSION}" {
		t.Errorf("manifest header: %s %s %q version %q", m.APIVersion, m.Kind, m.Metadata.Name, m.Spec.Version)
	}
	var got []string
	for _, p := range m.Spec.Platforms {
		os, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		got = append(got, os+"/"+arch)
		if p.Bin != "kubectl-cutover" || p.SHA256 != "${SHA256_"+os+"_"+arch+"}" ||
			!strings.HasSuffix(p.URI, "/kubectl-cutover_${VERSION}_"+os+"_"+arch+".tar.gz") {
			t.Errorf("platform %s/%s: bin %q sha256 %q uri %q", os, arch, p.Bin, p.SHA256, p.URI)
		}
		// The archive holds the binary and the license (make plugin-dist).
		var files []string
		for _, f := range p.Files {
			files = append(files, f.From)
		}
		if !slices.Equal(files, []string{"kubectl-cutover", "LICENSE"}) {
			t.Errorf("platform %s/%s installs %v, want [kubectl-cutover LICENSE]", os, arch, files)
		}
	}
	slices.Sort(got)
	if want := []string{"darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"}; !slices.Equal(got, want) {
		t.Errorf("platforms %v, want %v (the Makefile's PLUGIN_PLATFORMS)", got, want)
	}
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "PLUGIN_PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64") {
		t.Error("the Makefile's PLUGIN_PLATFORMS differ from the manifest's platforms")
	}
}
