package admin

// A tunnel's spec in JSON, with the names of the config file: engine.TunnelSpec has YAML tags
// only, so its JSON form is a mirror type built once by reflection, each field tagged with its
// YAML name. Decoding into the mirror is strict (unknown fields refused) and names the field of
// a type error by its path (connections.idle_timeout); the mirror is then copied field by field.

import (
	"bytes"
	"encoding"
	"encoding/json"
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
		return spec, jsonError(err)
	}
	if dec.More() {
		return spec, badRequest("body: more than one JSON value")
	}
	copyShape(reflect.ValueOf(&spec).Elem(), m.Elem())
	return spec, nil
}

// encodeTunnelSpec writes spec as decodeTunnelSpec reads it (ProxyAuth.Check, a function, is left out).
func encodeTunnelSpec(spec engine.TunnelSpec) ([]byte, error) {
	spec.Auth.Check = nil
	m := reflect.New(tunnelSpecMirror()).Elem()
	copyShape(m, reflect.ValueOf(spec))
	return json.Marshal(m.Interface())
}
