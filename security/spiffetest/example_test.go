package spiffetest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/weftmesh/weft/security/spiffetest"
)

func ExampleStartWorkloadAPI() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, err := spiffetest.NewCA(td)
	if err != nil {
		panic(err)
	}
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	api, err := spiffetest.StartWorkloadAPI(ca, id)
	if err != nil {
		panic(err)
	}
	defer api.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(api.Addr())))
	if err != nil {
		panic(err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		panic(err)
	}
	fmt.Println(svid.ID)
	// Output: spiffe://example.org/ns/default/sa/web
}

func ExampleCA_IssueX509SVID() {
	ca, err := spiffetest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		panic(err)
	}
	svid, err := ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://example.org/billing"), 5*time.Minute)
	if err != nil {
		panic(err)
	}
	leaf := svid.Certificates[0]
	fmt.Println(leaf.URIs[0], leaf.IsCA)
	// Output: spiffe://example.org/billing false
}
