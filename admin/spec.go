package admin

// A tunnel's spec in JSON, with the names of the config file: engine.TunnelSpec has YAML tags
// only, so its JSON form is a mirror type built once by reflection, each field tagged with its
// YAML name. Decoding into the mirror is strict (unknown fields refused) and names the field of
// a type error by its path (connections.idle_timeout); the mirror is then copied field by field.

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/warren-tunnel/warren/engine"
)

var (
	specMirrorOnce sync.Once
	specMirror     reflect.Type
)

func tunnelSpecMirror() reflect.Type {
	specMirrorOnce.Do(func() { specMirror = mirror(reflect.TypeFor[engine.TunnelSpec]()) })
	return specMirror
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// mirror is t with every struct (nested ones too) re-tagged for JSON by its YAML names.
func mirror(t reflect.Type) reflect.Type {
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return t // a scalar in both forms (engine.Duration)
	}
	switch t.Kind() {
	case reflect.Struct:
		fields := make([]reflect.StructField, t.NumField())
		for i := range fields {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[i] = reflect.StructField{Name: f.Name, Type: mirror(f.Type), Tag: reflect.StructTag(`json:"` + name + `"`)}
		}
		return reflect.StructOf(fields)
	case reflect.Slice:
		return reflect.SliceOf(mirror(t.Elem()))
	case reflect.Map:
		return reflect.MapOf(t.Key(), mirror(t.Elem()))
	case reflect.Pointer:
		return reflect.PointerTo(mirror(t.Elem()))
	}
	return t
}

// copyShape copies src into dst, two values of the same shape (a type and its mirror).
func copyShape(dst, src reflect.Value) {
	if dst.Type() == src.Type() {
		dst.Set(src)
		return
	}
	switch src.Kind() {
	case reflect.Struct:
		for i := range src.NumField() {
			copyShape(dst.Field(i), src.Field(i))
		}
	case reflect.Slice:
		if src.IsNil() {
			return
		}
		s := reflect.MakeSlice(dst.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			copyShape(s.Index(i), src.Index(i))
		}
		dst.Set(s)
	case reflect.Map:
		if src.IsNil() {
			return
		}
		m := reflect.MakeMapWithSize(dst.Type(), src.Len())
		for it := src.MapRange(); it.Next(); {
			v := reflect.New(dst.Type().Elem()).Elem()
			copyShape(v, it.Value())
			m.SetMapIndex(it.Key(), v)
		}
		dst.Set(m)
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		p := reflect.New(dst.Type().Elem())
		copyShape(p.Elem(), src.Elem())
		dst.Set(p)
	}
}

// decodeTunnelSpec reads a tunnel's spec from JSON with the config file's field names.
func decodeTunnelSpec(data []byte) (engine.TunnelSpec, error) {
	var spec engine.TunnelSpec
	if len(bytes.TrimSpace(data)) == 0 {
		return spec, badRequest("body: empty; want a tunnel as in the config file's tunnels (JSON)")
	}
	m := reflect.New(tunnelSpecMirror())
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(m.Interface()); err != nil {
		var ae *Error
		if errors.As(jsonError(err), &ae) && strings.HasPrefix(ae.Message, "body:") {
			// An error of a field's own decoding (a duration that does not parse) names no field.
			var raw any
			if json.Unmarshal(data, &raw) == nil {
				if path := badText(raw, tunnelSpecMirror(), "body"); path != "" {
					return spec, badRequest("%s: %v", path, err)
				}
			}
		}
		return spec, jsonError(err)
	}
	if dec.More() {
		return spec, badRequest("body: more than one JSON value")
	}
	copyShape(reflect.ValueOf(&spec).Elem(), m.Elem())
	return spec, nil
}

// badText finds the path of the first value in raw that a field of type t (a mirror) implementing
// encoding.TextUnmarshaler refuses; "" if none does.
func badText(raw any, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		str, ok := raw.(string)
		if ok && reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(str)) != nil {
			return path
		}
		return ""
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, _ := raw.(map[string]any)
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if v, ok := obj[name]; ok && name != "-" {
				if p := badText(v, f.Type, path+"."+name); p != "" {
					return p
				}
			}
		}
	case reflect.Slice:
		arr, _ := raw.([]any)
		for i, v := range arr {
			if p := badText(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	case reflect.Map:
		obj, _ := raw.(map[string]any)
		for k, v := range obj {
			if p := badText(v, t.Elem(), path+"."+k); p != "" {
				return p
			}
		}
	}
	return ""
}

// encodeTunnelSpec writes spec as decodeTunnelSpec reads it (ProxyAuth.Check, a function, is left out).
func encodeTunnelSpec(spec engine.TunnelSpec) ([]byte, error) {
	spec.Auth.Check = nil
	m := reflect.New(tunnelSpecMirror()).Elem()
	copyShape(m, reflect.ValueOf(spec))
	return json.Marshal(m.Interface())
}
