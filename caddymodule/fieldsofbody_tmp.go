package caddymodule

// fieldsOfBody stands for jsonbody.Fields (helper E's, branch
// i-capture) until that lands: then it becomes an alias.
type fieldsOfBody struct {
	Model     string
	HasModel  bool
	Fallbacks []string
}
