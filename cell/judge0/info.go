package judge0

import (
	"sort"
	"strconv"
	"strings"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
)

// Language is one entry of GET /languages.
type Language struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// languageList is GET /languages: Judge0's ids of the languages this node
// runs, with their detected versions.
func languageList(in dialect.InfoInput) (any, error) {
	out := []Language{}
	for _, l := range in.Catalog.List() {
		if id := judge0ID(l.ID); id != 0 {
			out = append(out, Language{ID: id, Name: languageName(in.Catalog, l.ID)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ArchivedLanguage is one entry of GET /languages/all.
type ArchivedLanguage struct {
	Language
	IsArchived bool `json:"is_archived"`
}

// languageAll is GET /languages/all: Judge0's active and archived
// languages, each with is_archived. Every language this node runs is
// active.
func languageAll(in dialect.InfoInput) (any, error) {
	list, err := languageList(in)
	if err != nil {
		return nil, err
	}
	out := []ArchivedLanguage{}
	for _, l := range list.([]Language) {
		out = append(out, ArchivedLanguage{Language: l})
	}
	return out, nil
}

// LanguageDetail is GET /languages/{id}.
type LanguageDetail struct {
	ID         int     `json:"id"`
	Name       string  `json:"name"`
	IsArchived bool    `json:"is_archived"`
	SourceFile string  `json:"source_file"`
	CompileCmd *string `json:"compile_cmd"`
	RunCmd     string  `json:"run_cmd"`
}

// languageOne is GET /languages/{id}, for any of Judge0's ids of a
// language we run.
func languageOne(in dialect.InfoInput) (any, error) {
	raw := in.PathValue("id")
	id, err := strconv.Atoi(raw)
	ours, ok := ourLanguage(id)
	lang, found := in.Catalog.Lookup(ours)
	if err != nil || !ok || !found {
		return nil, apierror.New(apierror.NotFound, "Couldn't find Language with 'id'=%.32q", raw)
	}
	d := LanguageDetail{ID: id, Name: languageName(in.Catalog, ours), SourceFile: lang.SourceFile, RunCmd: strings.Join(lang.Run, " ")}
	if lang.Compile != nil {
		d.CompileCmd = ptr(strings.Join(lang.Compile, " ") + " %s")
	}
	return d, nil
}

// statusList is GET /statuses.
func statusList(dialect.InfoInput) (any, error) { return Statuses, nil }

// about is GET /about.
func about(dialect.InfoInput) (any, error) {
	return map[string]string{
		"version":     "1.13.1",
		"homepage":    "https://github.com/sandboxapi/sandboxapi",
		"source_code": "https://github.com/sandboxapi/sandboxapi",
		"maintainer":  "SandboxAPI: Judge0 CE's API served by the judge0 dialect (docs/judge0.md)",
	}, nil
}

// configInfo is GET /config_info: Judge0's configuration keys, with the
// caller's plan's limits and the sandbox's.
func configInfo(in dialect.InfoInput) (any, error) {
	maxS := float64(in.Plan.MaxTimeoutSeconds)
	return map[string]any{
		"enable_wait_result":                               true,
		"enable_compiler_options":                          true,
		"allowed_languages_for_compile_options":            []string{},
		"enable_command_line_arguments":                    true,
		"enable_submission_delete":                         true,
		"enable_callbacks":                                 in.Plan.Async,
		"callbacks_max_tries":                              3,
		"callbacks_timeout":                                5.0,
		"enable_additional_files":                          true,
		"max_queue_size":                                   nil,
		"cpu_time_limit":                                   min(DefaultCPUTimeLimit, maxS),
		"max_cpu_time_limit":                               maxS,
		"cpu_extra_time":                                   min(DefaultCPUExtraTime, MaxCPUExtraTime),
		"max_cpu_extra_time":                               MaxCPUExtraTime,
		"wall_time_limit":                                  min(DefaultWallTimeLimit, maxS),
		"max_wall_time_limit":                              maxS,
		"memory_limit":                                     MaxMemoryLimitKB,
		"max_memory_limit":                                 MaxMemoryLimitKB,
		"stack_limit":                                      DefaultStackLimitKB,
		"max_stack_limit":                                  MaxStackLimitKB,
		"max_processes_and_or_threads":                     MaxProcesses,
		"max_max_processes_and_or_threads":                 MaxProcesses,
		"enable_per_process_and_thread_time_limit":         false,
		"allow_enable_per_process_and_thread_time_limit":   true,
		"enable_per_process_and_thread_memory_limit":       false,
		"allow_enable_per_process_and_thread_memory_limit": true,
		"max_file_size":                                    MaxFileSizeKB,
		"max_max_file_size":                                MaxFileSizeKB,
		"number_of_runs":                                   DefaultNumberOfRuns,
		"max_number_of_runs":                               MaxNumberOfRuns,
		"redirect_stderr_to_stdout":                        false,
		"max_extract_size":                                 execreq.MaxFilesBytes / 1024,
		"enable_batched_submissions":                       in.Plan.BatchSize > 0 && in.Plan.Async,
		"max_submission_batch_size":                        in.Plan.BatchSize,
		"allow_enable_network":                             in.Plan.NodeEgress && len(in.Plan.NodeNetworkAllow) > 0,
		"enable_network":                                   false,
	}, nil
}
